"""The house stays one-way: floors in one order, no import circles, the kernel on the ground floor.

Every module under ``frontload/``, ``corpus/``, ``synth/``, ``filters/``, ``train/`` and ``analysis/``
is parsed (no import runs) and every ``import`` of a frontload module is collected, at module level
and inside functions alike. Three rules:

- a module imports only from its own floor or a lower one (the order is :data:`FLOORS`, here and
  nowhere else; ``docs/architecture.md`` must show the same order);
- the kernel (``frontload.core``) imports no stage at all;
- there is no circle among modules. Imports only for type checkers (under ``if TYPE_CHECKING:``)
  never run, so they form no circle; they still obey the floors.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Bottom to top. "runner" is everything in frontload/ outside the kernel: the CLI, the study file,
# the runner and its steps, the job scripts (the only place that knows every stage).
FLOORS = ("core", "corpus", "synth", "filters", "train", "analysis", "runner")
# Source folder -> import name (pyproject.toml's package-dir).
PACKAGES = {
    "frontload": "frontload",
    "corpus": "frontload.corpus",
    "synth": "frontload.synth",
    "filters": "frontload.filters",
    "train": "frontload.train",
    "analysis": "frontload.analysis",
}


@dataclass
class Graph:
    """Modules and their frontload imports: ``runtime`` ones run, ``typing`` ones only for type checkers."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)
    runtime: dict[str, set[str]] = field(default_factory=dict)
    typing: dict[str, set[str]] = field(default_factory=dict)


def floor(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in FLOORS[:-1]:
        return parts[1]
    return "runner"


def _module_names(root: Path) -> dict[str, Path]:
    names = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names[".".join([package, *parts])] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, package: str, modules: dict[str, Path]):
    """(imported module, type-checking only?) for every frontload import in ``tree``, at any depth."""
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            typing_only |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                anchor = package.split(".")
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            # `from pkg import name` imports the module pkg.name when there is one, else pkg itself.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import frontload.core.config.x` -> the module part
                target = target.rpartition(".")[0]
            if target:
                yield target, id(node) in typing_only


def build_graph(root: Path) -> Graph:
    """The import graph of the frontload sources under ``root``."""
    graph = Graph(root=root, files=_module_names(root))
    for module, path in graph.files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        graph.runtime[module], graph.typing[module] = set(), set()
        for target, typing_only in _imports(ast.parse(path.read_text(encoding="utf-8")), package, graph.files):
            if target != module:
                (graph.typing if typing_only else graph.runtime)[module].add(target)
    return graph


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def problems(graph: Graph) -> list[str]:
    """Every broken rule, one line each, naming the file."""
    out = []
    for module in sorted(graph.files):
        for target in sorted(graph.runtime[module] | graph.typing[module]):
            here, there = floor(module), floor(target)
            rel = graph.files[module].relative_to(graph.root).as_posix()
            if here == "core" and there != "core":
                out.append(f"{rel}: the kernel {module} imports the stage module {target}")
            elif FLOORS.index(there) > FLOORS.index(here):
                out.append(f"{rel}: {module} ({here}) imports {target} from the later floor {there}")
    out += [f"import circle: {' <-> '.join(group)}" for group in circles(graph.runtime)]
    return out


def test_the_sources_follow_the_floors_with_no_circle():
    graph = build_graph(ROOT)
    assert len(graph.files) > 50 and any(graph.runtime.values())  # the parser found the code
    assert problems(graph) == []


def _plant(root: Path, files: dict[str, str]) -> Path:
    for folder in PACKAGES:
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "__init__.py").touch()
    (root / "frontload" / "core").mkdir(exist_ok=True)
    (root / "frontload" / "core" / "__init__.py").touch()
    for rel, text in files.items():
        (root / rel).write_text(text)
    return root


def test_a_planted_circle_is_caught_even_through_a_function_level_import(tmp_path):
    root = _plant(
        tmp_path,
        {
            "corpus/a.py": "from frontload.corpus import b\n",
            "corpus/b.py": "def f():\n    from frontload.corpus.a import x\n",
        },
    )
    assert problems(build_graph(root)) == ["import circle: frontload.corpus.a <-> frontload.corpus.b"]


def test_an_upward_import_and_a_kernel_importing_a_stage_are_caught(tmp_path):
    root = _plant(
        tmp_path,
        {
            "corpus/a.py": "def f():\n    import frontload.train.loop\n",
            "train/loop.py": "",
            "frontload/core/k.py": "from frontload.synth.families import FAMILIES\n",
            "synth/families.py": "",
        },
    )
    found = problems(build_graph(root))
    assert any(
        "frontload.corpus.a (corpus) imports frontload.train.loop from the later floor train" in p for p in found
    )
    assert any("the kernel frontload.core.k imports the stage module frontload.synth.families" in p for p in found)


def test_type_checking_imports_form_no_circle_but_obey_the_floors(tmp_path):
    root = _plant(
        tmp_path,
        {
            "train/rl.py": "from frontload.train import rollouts\n",
            "train/rollouts.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from frontload.train.rl import X\n",
            "corpus/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from frontload.analysis.store import S\n",
            "analysis/store.py": "",
        },
    )
    assert problems(build_graph(root)) == [
        "corpus/c.py: frontload.corpus.c (corpus) imports frontload.analysis.store from the later floor analysis"
    ]


def test_docs_architecture_shows_the_same_floors():
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    line = re.search(r"^Floors, bottom to top: (.+)$", doc, re.M)
    assert line, "docs/architecture.md needs a line 'Floors, bottom to top: core → ...'"
    shown = tuple(re.findall(r"`(\w+)`", line[1]))
    assert shown == FLOORS, f"docs/architecture.md shows {shown}; the floors are {FLOORS}"
    for name in FLOORS[1:-1]:
        assert f"{name}/" in doc, f"the picture in docs/architecture.md does not show the {name}/ stage"
