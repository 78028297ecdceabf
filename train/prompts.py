"""The RL prompt set: problems with gold answers, rendered as prompts, and the seeded order they are drawn in.

:func:`load_prompt_sets` reads one set or several named ones (corpus folders or JSONL files);
:class:`PromptOrder` gives each set an epoch-shuffled order and :class:`PromptMix` interleaves the
sets by weight, so a resumed run draws the same prompts as one that never stopped.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from frontload.core.chat import render_prompt
from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import fingerprint


@dataclass(kw_only=True)
class RLPrompt:
    """One RL problem: the rendered prompt and its gold answer."""

    id: str
    problem: str
    answer: str
    prompt: str  # rendered with frontload.core.chat.render_prompt
    source: str | None = None


def _prompt_from_fields(rec: dict, where: str) -> RLPrompt:
    meta = rec.get("metadata") or {}
    problem = rec.get("question", rec.get("problem", meta.get("problem")))
    answer = rec.get("answer", meta.get("answer"))
    if not isinstance(problem, str) or not problem.strip():
        raise FrontloadError(f"{where}: no 'question' (or 'problem' / metadata.problem) string")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise FrontloadError(f"{where}: no 'answer' (or metadata.answer)")
    prompt = meta.get("prompt") if isinstance(meta.get("prompt"), str) else render_prompt(problem)
    pid = str(rec.get("id") or "")
    if not pid:
        from frontload.core.fingerprint import fingerprint

        pid = fingerprint(problem, str(answer))
    return RLPrompt(
        id=pid, problem=problem, answer=str(answer), prompt=prompt, source=meta.get("source") or rec.get("source")
    )


def load_prompts(path: str | os.PathLike) -> list[RLPrompt]:
    """An RL set: a corpus folder (``data/*.jsonl[.gz]`` records with metadata.problem/answer) or a JSONL file
    with ``question``/``answer`` fields. Errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise FrontloadError(f"{path}: RL prompt set not found")
    prompts: list[RLPrompt] = []
    if path.is_dir():
        data = path / "data"
        if not data.is_dir():
            raise FrontloadError(f"{path}: a corpus folder needs a data/ folder of JSONL documents")
        from datatrove.pipeline.readers import JsonlReader

        # datatrove's reader yields Documents; its default adapter keeps id and metadata.
        reader = JsonlReader(str(data), glob_pattern="*.jsonl*", recursive=True)
        for i, doc in enumerate(reader.run()):
            prompts.append(
                _prompt_from_fields(
                    {"id": doc.id, "metadata": doc.metadata}, f"{data} (document {i}, id {doc.id!r}): metadata"
                )
            )
    else:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise FrontloadError(f"{path}:{lineno}: not JSON ({e.msg})") from None
                if not isinstance(rec, dict):
                    raise FrontloadError(f"{path}:{lineno}: expected a JSON object")
                prompts.append(_prompt_from_fields(rec, f"{path}:{lineno}"))
    if not prompts:
        raise FrontloadError(f"{path}: the RL prompt set is empty")
    return prompts


class PromptOrder:
    """The RL set's own seeded order: epochs of shuffled prompts, a pure function of the global position.

    Prompt ``g`` of the run (counting over steps) is ``perm(epoch = g // n)[g % n]``, so resuming at
    GRPO step ``t`` needs no saved sampler state: it continues at ``g = t * prompts_per_step``.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._cache: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._cache:
            order = list(range(self.n))
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
            self._cache = {epoch: order}  # only the current epoch is ever needed again
        return self._cache[epoch]

    def indices(self, start: int, k: int) -> list[int]:
        """Prompt indices at global positions ``start .. start + k - 1``."""
        return [self._perm(g // self.n)[g % self.n] for g in range(start, start + k)]


class PromptMix:
    """The RL set's mix over named prompt sets: which set each slot draws from, then that set's own order.

    Slot ``g`` goes to the set furthest below its target share ``w_s * (g + 1)`` (ties to the first
    name), the deterministic blending Megatron's ``BlendedDataset`` uses; within a set, prompts come in
    :class:`PromptOrder`. Both are pure functions of ``g``, so resuming needs no sampler state.
    """

    def __init__(self, sizes: dict[str, int], weights: dict[str, float], seed: int) -> None:
        self.names = sorted(sizes)
        total = sum(weights.get(n, 0.0) for n in self.names) if weights else float(sum(sizes.values()))
        self.share = {n: (weights[n] if weights else sizes[n]) / total for n in self.names}
        self.orders = {n: PromptOrder(sizes[n], seed + 7919 * i) for i, n in enumerate(self.names)}
        self._slots: list[str] = []  # source of slots 0 .. len - 1, extended on demand
        self._counts = dict.fromkeys(self.names, 0)
        self._within: list[int] = []  # position of each slot within its set

    def _extend(self, upto: int) -> None:
        while len(self._slots) < upto:
            g = len(self._slots)
            name = max(self.names, key=lambda n: (self.share[n] * (g + 1) - self._counts[n], -self.names.index(n)))
            self._slots.append(name)
            self._within.append(self._counts[name])
            self._counts[name] += 1

    def indices(self, start: int, k: int) -> list[tuple[str, int]]:
        """``(set name, prompt index)`` of slots ``start .. start + k - 1``."""
        self._extend(start + k)
        return [
            (self._slots[g], self.orders[self._slots[g]].indices(self._within[g], 1)[0])
            for g in range(start, start + k)
        ]


def load_prompt_sets(prompts: str | dict[str, str]) -> dict[str, list[RLPrompt]]:
    """The named RL sets of a config: one path (named ``rl``) or a table ``{name: path}`` (source = name)."""
    if isinstance(prompts, str):
        return {"rl": load_prompts(prompts)}
    sets = {}
    for name, path in prompts.items():
        loaded = load_prompts(path)
        for p in loaded:
            p.source = name  # consumed_by_source counts the mix's own names
        sets[name] = loaded
    return sets


def prompt_set_fingerprint(sets: dict[str, list[RLPrompt]], weights: dict[str, float]) -> str:
    """Fingerprint of the prompt sets and their weights (what an RL checkpoint is tied to)."""
    return fingerprint({k: [[p.id, p.prompt, p.answer] for p in v] for k, v in sets.items()}, weights)
