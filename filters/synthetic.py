"""Synthetic traces folders for tests, demos and benchmarks of the filters (no model, nothing downloaded).

Each record looks like one rollout that ``frontload synth`` writes (contract 2): an arithmetic word
problem with its gold answer, a reasoning trace padded with words drawn from the English from Python's shipped
``pydoc_data.topics`` (so unrelated traces are not near-duplicates), the rendered prompt/response, the
extracted prediction, finish reason and problem id. Some rollouts are wrong, unclosed or truncated
when ``faults=True``. The same seed gives the same folder.
"""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from frontload.core.chat import END, THINK_OPEN, render_prompt, render_response

NAMES = ("Ada", "Bruno", "Chen", "Dara", "Emil", "Farah", "Goro", "Hana", "Ivan", "Jun")
ITEMS = ("apples", "marbles", "stamps", "coins", "books", "shells", "cards", "pens")


@lru_cache(maxsize=1)
def _words() -> tuple[str, ...]:
    import pydoc_data.topics

    text = " ".join(pydoc_data.topics.topics.values())
    return tuple(w for w in re.findall(r"[A-Za-z][A-Za-z']+", text) if len(w) > 1)


def filler(rng: random.Random, n_words: int) -> str:
    """Words drawn from shipped English prose; random draws (not windows: the prose repeats whole passages)."""
    return " ".join(rng.choices(_words(), k=n_words)) + "."


def rollout(
    problem: str, answer: str, trace: str, prediction: str | None, pid: str, k: int, **extra: Any
) -> dict[str, Any]:
    """One rollout record as a JSON-able dict (datatrove JSONL row)."""
    prompt = render_prompt(problem)
    response = render_response(trace, prediction) if prediction is not None else f"{THINK_OPEN}\n{trace}{END}"
    meta = {
        "problem": problem,
        "answer": answer,
        "source": "synthetic",
        "family": "word_arithmetic",
        "difficulty": 1,
        "trace": trace,
        "prompt": prompt,
        "response": response,
        "completion": response,
        "prediction": prediction,
        "finish_reason": "stop",
        "problem_id": pid,
        "rollout": k,
    }
    meta.update(extra)
    return {"text": prompt + response, "id": f"{pid}.{k}", "metadata": meta}


def make_problem(rng: random.Random, i: int) -> tuple[str, str, str]:
    """``(problem, answer, trace)`` of synthetic problem ``i``."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 999), rng.randint(2, 999)
    context = filler(rng, 24)
    problem = f"{context} {name} has {a} {item} and buys {b} more {item} (order {i}). How many {item} now?"
    trace = f"{name} starts with {a} {item}. Adding {b} gives {a} + {b} = {a + b}."
    return problem, str(a + b), trace


def make_records(n_problems: int, rollouts: int = 2, seed: int = 0, faults: bool = False) -> list[dict[str, Any]]:
    """Rollout records for ``n_problems`` problems; with ``faults`` some are wrong, unclosed or truncated."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_problems):
        problem, answer, trace = make_problem(rng, i)
        for k in range(rollouts):
            text = f"{trace} {filler(rng, 40)}"  # each rollout words its reasoning differently
            row = rollout(problem, answer, text, answer, f"p{i:07d}", k)
            if faults and rng.random() < 0.15:
                fault = rng.choice(("wrong", "unclosed", "truncated"))
                if fault == "wrong":
                    row = rollout(problem, answer, text, str(int(answer) + 1), f"p{i:07d}", k)
                else:
                    row = rollout(
                        problem,
                        answer,
                        text,
                        None,
                        f"p{i:07d}",
                        k,
                        finish_reason="length" if fault == "truncated" else "stop",
                    )
            rows.append(row)
    return rows


def write_traces(folder: str | Path, rows: list[dict[str, Any]], shards: int = 1) -> Path:
    """Write rows as ``folder/data/<shard>.jsonl`` (the layout of a traces folder)."""
    data = Path(folder) / "data"
    data.mkdir(parents=True, exist_ok=True)
    files = [open(data / f"{s:05d}.jsonl", "w", encoding="utf-8") for s in range(shards)]  # noqa: SIM115
    try:
        for i, row in enumerate(rows):
            files[i % shards].write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        for f in files:
            f.close()
    return Path(folder)
