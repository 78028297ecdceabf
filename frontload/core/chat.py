r"""The chat and reasoning format shared by synth, SFT, RL and evaluation.

A training example is ``prompt + response``::

    <|user|>
    {problem}
    <|assistant|>
    <think>
    {step-by-step trace}
    </think>
    The answer is \boxed{42}.<|end|>

The role and think markers are special tokens of every frontload tokenizer (see
:data:`SPECIAL_TOKENS`), so they are single ids and cannot be produced by accident from plain
text. :func:`parse_response` tolerates missing tags and records what it found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

USER, ASSISTANT, SYSTEM, END = "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SPECIAL_TOKENS: tuple[str, ...] = (USER, ASSISTANT, SYSTEM, END, THINK_OPEN, THINK_CLOSE)


def render_prompt(problem: str, system: str | None = None) -> str:
    """The prompt part of an example: the user turn and the assistant header."""
    head = f"{SYSTEM}\n{system.strip()}\n" if system else ""
    return f"{head}{USER}\n{problem.strip()}\n{ASSISTANT}\n"


def render_response(trace: str | None, answer: str) -> str:
    """The response part: the thinking (if any), then the boxed answer and the end-of-turn marker."""
    think = f"{THINK_OPEN}\n{trace.strip()}\n{THINK_CLOSE}\n" if trace else ""
    return f"{think}The answer is \\boxed{{{answer}}}.{END}"


def render_example(problem: str, trace: str | None, answer: str, system: str | None = None) -> tuple[str, str]:
    """``(prompt, response)`` for one problem; loss is taken on the response only."""
    return render_prompt(problem, system), render_response(trace, answer)


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` (or ``\fbox{...}``), braces balanced; None if absent or unclosed."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


_ANSWER_IS = re.compile(r"answer is[:\s]*\$?([^\n$]+?)\$?\s*(?:\.|$|\n|<\|end\|>)", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class ParsedResponse:
    """What :func:`parse_response` found in a model's output."""

    think: str | None  # text between the think tags (or before </think> if <think> is missing)
    answer: str | None  # the final answer, from \boxed{} or an "answer is" sentence
    think_open: bool
    think_closed: bool
    boxed: bool
    answer_source: str  # "boxed", "answer_is" or "none"


def parse_response(text: str) -> ParsedResponse:
    """Split a completion into thinking and final answer, tolerating missing tags."""
    think_open = THINK_OPEN in text
    think_closed = THINK_CLOSE in text
    think: str | None = None
    after = text
    if think_closed:
        before, _, after = text.partition(THINK_CLOSE)
        think = before.split(THINK_OPEN, 1)[-1].strip()
    elif think_open:
        think = text.split(THINK_OPEN, 1)[1].strip()
        after = ""
    # Prefer an answer after the thinking; fall back to one inside it (e.g. a truncated close tag).
    for region in (after, text):
        boxed = last_boxed(region)
        if boxed is not None:
            return ParsedResponse(
                think=think,
                answer=boxed,
                think_open=think_open,
                think_closed=think_closed,
                boxed=True,
                answer_source="boxed",
            )
    matches = list(_ANSWER_IS.finditer(after or text))
    answer = matches[-1].group(1).strip() if matches else None
    return ParsedResponse(
        think=think,
        answer=answer,
        think_open=think_open,
        think_closed=think_closed,
        boxed=False,
        answer_source="answer_is" if answer else "none",
    )
