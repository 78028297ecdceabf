"""Threshold rules: keep or drop a record by a boolean rule over its metadata, without ``eval``.

A rule is a Python expression parsed with :mod:`ast` and checked against an allow-list before it
is ever evaluated: comparisons (``== != < <= > >=``, chains such as ``0.2 <= pass_rate_v1 <= 0.8``,
``in``/``not in``), ``and``/``or``/``not``, names of metadata fields, ``field.key`` for a key of a
metadata dict (``repetition_v1.dup_line_frac``), string/number/bool/None literals, lists and tuples of
literals, and unary minus. Calls, subscripts, lambdas, comprehensions, arithmetic and dunder names
are refused with an error naming the rule and the offending token.

A record is dropped with the reason ``threshold:<first failing clause>`` of a top-level ``and``, so
the drop account says which clause removed what; a record missing a field the rule names is dropped
as ``threshold:missing:<field>`` rather than silently compared with None.
"""

from __future__ import annotations

import ast
import operator
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from frontload.core.errors import FrontloadError


class RuleError(FrontloadError, ValueError):
    """A threshold rule is malformed or uses something outside the allow-list."""


_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


class _Missing(Exception):
    def __init__(self, field: str) -> None:
        self.field = field


def _check(node: ast.AST, rule: str) -> None:
    """Refuse any node outside the allow-list, naming its source text."""

    def bad(n: ast.AST, what: str) -> RuleError:
        token = ast.get_source_segment(rule, n) or type(n).__name__
        return RuleError(f"threshold rule {rule!r}: {what} {token!r} is not allowed")

    if isinstance(node, ast.Expression):
        _check(node.body, rule)
    elif isinstance(node, ast.BoolOp):
        for v in node.values:
            _check(v, rule)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.Not | ast.USub):
            raise bad(node, "operator")
        _check(node.operand, rule)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise bad(node, "comparison")
        for v in (node.left, *node.comparators):
            _check(v, rule)
    elif isinstance(node, ast.Name):
        if node.id.startswith("_"):
            raise bad(node, "name")
    elif isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise bad(node, "attribute")
        _check(node.value, rule)
        if not isinstance(node.value, ast.Name | ast.Attribute):
            raise bad(node, "attribute of")
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, str | int | float | bool | type(None)):
            raise bad(node, "literal")
    elif isinstance(node, ast.List | ast.Tuple | ast.Set):
        for v in node.elts:
            if not isinstance(v, ast.Constant):
                raise bad(v, "non-literal list item")
            _check(v, rule)
    else:
        raise bad(node, "expression")


def _field(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    assert isinstance(node, ast.Attribute)
    return f"{_field(node.value)}.{node.attr}"


def _eval(node: ast.AST, meta: dict[str, Any]) -> Any:
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_eval(v, meta) for v in node.values)
        return any(_eval(v, meta) for v in node.values)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, meta)
        return (not value) if isinstance(node.op, ast.Not) else -value
    if isinstance(node, ast.Compare):
        left = _eval(node.left, meta)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, meta)
            try:
                if not _COMPARE[type(op)](left, right):
                    return False
            except TypeError:
                return False  # e.g. a string field compared with a number: the clause fails
            left = right
        return True
    if isinstance(node, ast.Name | ast.Attribute):
        value: Any = meta
        for part in _field(node).split("."):
            if not isinstance(value, dict) or part not in value:
                raise _Missing(_field(node))
            value = value[part]
        return value
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [e.value for e in node.elts]  # type: ignore[attr-defined]
    raise AssertionError(f"unchecked node {node!r}")


class Rule:
    """A parsed, checked threshold rule; ``evaluate(meta) -> (keep, reason)``."""

    def __init__(self, text: str) -> None:
        self.text = text
        if not text or not text.strip():
            raise RuleError("threshold rule is empty")
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as e:
            raise RuleError(f"threshold rule {text!r}: syntax error at column {e.offset}: {e.msg}") from None
        _check(tree, text.strip())
        self._tree = tree
        body = tree.body
        # Clauses of a top-level `and` are evaluated one by one so the reason names the one that failed.
        values = body.values if isinstance(body, ast.BoolOp) and isinstance(body.op, ast.And) else [body]
        source = text.strip()
        self.clauses = [(ast.get_source_segment(source, v) or ast.unparse(v), v) for v in values]
        self.fields = sorted({_field(n) for n in ast.walk(body) if isinstance(n, ast.Name | ast.Attribute)} - {""})

    def evaluate(self, meta: dict[str, Any]) -> tuple[bool, str | None]:
        """``(True, None)`` to keep; ``(False, reason)`` naming the failing clause or the missing field."""
        for text, node in self.clauses:
            try:
                ok = bool(_eval(node, meta))
            except _Missing as m:
                return False, f"threshold:missing:{m.field}"
            if not ok:
                return False, f"threshold:{text}"
        return True, None

    def __repr__(self) -> str:
        return f"Rule({self.text!r})"


class ThresholdFilter(BaseFilter):
    """Keeps records whose metadata satisfies the rule; drops the rest with the failing clause as reason."""

    name = "⚖️ threshold rule"

    def __init__(self, rule: str, exclusion_writer: DiskWriter | None = None, prefix: str = "threshold") -> None:
        super().__init__(exclusion_writer)
        self.rule = Rule(rule)
        self.prefix = prefix  # names the step in drop reasons, e.g. "pass_rate_band:..."

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        keep, reason = self.rule.evaluate(doc.metadata)
        if keep:
            return True
        return False, self.prefix + (reason or "threshold").removeprefix("threshold")
