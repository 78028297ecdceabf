r"""The RL phase: GRPO with verifiable rewards on the Megatron-core policy.

Each step samples ``prompts_per_step`` prompts from the RL set (its own seeded order) and
``group_size`` completions per prompt, scores each completion with the verifier (correct answer
= ``reward.correct``, plus an optional format reward), normalises rewards within each group into
advantages and takes ``minibatches × epochs`` optimiser steps on the clipped policy-ratio
objective (token-level averaging over the whole rollout batch, optional k3 KL to the frozen SFT
reference). The optimiser steps go through the one training loop shared with pretraining and SFT;
only the batch source and the loss differ.

Invariants:

* prompt and padding tokens never carry loss; only sampled completion tokens do;
* the old-policy log-probs of a rollout batch are those of the policy that sampled it (the
  trainer recomputes them before the first optimiser step, so a vLLM sampler's numerics never
  enter the ratio);
* a verifier that raises or runs past its timeout gives that completion reward 0 and adds one to
  ``verifier_errors``; the run goes on;
* a checkpoint holds the policy, optimiser, step, the reference fingerprint and the rollout RNG, so
  a killed run resumed from it logs the same metrics as one that was never stopped.
"""

from __future__ import annotations

import json
import os
import queue
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frontload.corpus.chat import parse_response, render_prompt
from frontload.corpus.errors import FrontloadError

# --------------------------------------------------------------------------------------------
# The GRPO loss, as pure functions on tensors.
# --------------------------------------------------------------------------------------------


def group_advantages(rewards, group_size: int, *, std_normalize: bool = True, eps: float = 1e-4):
    """Advantages ``(r - mean_group) / (std_group + eps)`` (or without the std) and a zero-variance mask.

    ``rewards`` is a float tensor of ``P * group_size`` rewards, groups contiguous. Returns
    ``(advantages [P*G], zero_variance [P])``; the std is the unbiased one (as TRL and NeMo-RL use).
    """
    import torch

    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.float().view(-1, group_size)
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    zero_variance = (r.max(dim=1).values - r.min(dim=1).values) == 0
    adv = r - mean
    if std_normalize:
        adv = adv / (std + eps)
    # Exactly zero, not 0/eps noise: such groups teach nothing (and with eps = 0 would be NaN).
    adv = adv.masked_fill(zero_variance.unsqueeze(1), 0.0)
    return adv.reshape(-1), zero_variance


def grpo_loss(
    logprobs,
    old_logprobs,
    advantages,
    loss_mask,
    *,
    ref_logprobs=None,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    kl_coef: float = 0.0,
    num_tokens: float | None = None,
):
    """Clipped-ratio GRPO loss with token-level averaging; returns ``(loss, stats)``.

    Shapes: ``logprobs``, ``old_logprobs``, ``ref_logprobs``, ``loss_mask`` are ``[B, T]`` (the
    log-prob of each sequence's token at that position); ``advantages`` is ``[B]``. ``loss_mask``
    is 1 on completion tokens and 0 on prompt and padding. The loss is the masked sum of
    ``-min(ρA, clip(ρ, 1-eps_low, 1+eps_high)A) + kl_coef·KL₃`` divided by ``num_tokens`` (the
    completion tokens of the whole rollout batch, so minibatches weight tokens equally) or by this
    batch's own token count. ``KL₃ = exp(ref - logp) - (ref - logp) - 1`` (Schulman's k3).
    """
    import torch

    mask = loss_mask.to(logprobs.dtype)
    denom = float(num_tokens) if num_tokens is not None else mask.sum().clamp(min=1.0)
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    adv = advantages.to(logprobs.dtype).unsqueeze(-1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    objective = torch.minimum(unclipped, clipped)
    per_token = -objective
    kl = None
    if ref_logprobs is not None:
        d = ref_logprobs - logprobs
        kl = torch.exp(d) - d - 1.0
        if kl_coef:
            per_token = per_token + kl_coef * kl
    loss = (per_token * mask).sum() / denom
    with torch.no_grad():
        n = mask.sum().clamp(min=1.0)
        stats = {
            "clip_frac": float(((clipped < unclipped).to(mask.dtype) * mask).sum() / n),
            "ratio_mean": float((ratio * mask).sum() / n),
            "kl": float((kl * mask).sum() / n) if kl is not None else 0.0,
            "tokens": float(mask.sum()),
        }
    return loss, stats


# --------------------------------------------------------------------------------------------
# Rewards.
# --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class RewardConfig:
    """How a completion's reward is made from the verifier's verdict and its format."""

    correct: float = 1.0  # reward for a verified correct answer
    format: float = 0.0  # extra reward when the think block is closed and a \boxed{} answer is present
    verifier_timeout_s: float = 10.0  # a verification running longer counts as an error (reward 0)
    mode: str = "math"  # verifier mode passed to verify_answer

    def __post_init__(self) -> None:
        from frontload.corpus.config import ConfigError

        if self.verifier_timeout_s <= 0:
            raise ConfigError("verifier_timeout_s", f"must be > 0, got {self.verifier_timeout_s}")
        if self.correct == 0 and self.format == 0:
            raise ConfigError("correct", "correct and format rewards are both 0: every reward would be 0")


@dataclass(kw_only=True)
class Reward:
    """One completion's score."""

    reward: float
    verdict: str  # "correct", "wrong", "unparseable" or "error" (verifier raised or timed out)
    prediction: str | None
    formatted: bool  # think block closed and a boxed answer present
    error: str | None = None


def default_verifier() -> Callable[..., str]:
    """The shared verifier, ``frontload.filters.verify.verify_answer``."""
    from frontload.filters.verify import verify_answer

    return verify_answer


class _TimedCaller:
    """Runs calls on one daemon worker thread with a timeout; a hung worker is abandoned, not joined.

    Python cannot kill a thread, so after a timeout the stuck worker is left to finish (or hang)
    on its own as a daemon and a fresh worker takes the next call; the run never waits on it and
    interpreter exit does not block on it.
    """

    def __init__(self) -> None:
        self._inbox: queue.Queue | None = None

    def _start(self) -> queue.Queue:
        inbox: queue.Queue = queue.Queue()

        def work() -> None:
            while True:
                fn, args, kwargs, outbox = inbox.get()
                try:
                    outbox.put((True, fn(*args, **kwargs)))
                except BaseException as e:  # noqa: BLE001 - any verifier failure becomes a counted error
                    outbox.put((False, e))

        threading.Thread(target=work, name="frontload-verifier", daemon=True).start()
        return inbox

    def __call__(self, timeout: float, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        if self._inbox is None:
            self._inbox = self._start()
        outbox: queue.Queue = queue.Queue(maxsize=1)
        self._inbox.put((fn, args, kwargs, outbox))
        try:
            ok, value = outbox.get(timeout=timeout)
        except queue.Empty:
            self._inbox = None  # abandon the stuck worker
            raise TimeoutError(f"verifier ran past {timeout:g} s") from None
        if not ok:
            raise value
        return value


class RewardScorer:
    """Scores completions against gold answers; verifier failures become reward 0 and a count."""

    def __init__(self, config: RewardConfig | None = None, verifier: Callable[..., str] | None = None) -> None:
        self.config = config or RewardConfig()
        self.verifier = verifier or default_verifier()
        self.errors = 0  # verifier errors (raised or timed out) since construction
        self._call = _TimedCaller()

    def score(self, gold: str, completion: str) -> Reward:
        """Reward of one completion."""
        parsed = parse_response(completion)
        formatted = parsed.think_closed and parsed.boxed
        fmt = self.config.format if formatted else 0.0
        try:
            verdict = self._call(
                self.config.verifier_timeout_s, self.verifier, gold, parsed.answer, mode=self.config.mode
            )
        except Exception as e:  # noqa: BLE001 - the contract: one bad completion never kills the run
            self.errors += 1
            return Reward(
                reward=0.0, verdict="error", prediction=parsed.answer, formatted=formatted, error=repr(e)[:200]
            )
        if verdict not in ("correct", "wrong", "unparseable"):
            self.errors += 1
            return Reward(
                reward=0.0,
                verdict="error",
                prediction=parsed.answer,
                formatted=formatted,
                error=f"verifier returned {verdict!r}",
            )
        value = (self.config.correct if verdict == "correct" else 0.0) + fmt
        return Reward(reward=value, verdict=verdict, prediction=parsed.answer, formatted=formatted)

    def score_batch(self, golds: Sequence[str], completions: Sequence[str]) -> list[Reward]:
        """Rewards of many completions (``golds[i]`` is the gold answer of ``completions[i]``)."""
        return [self.score(g, c) for g, c in zip(golds, completions, strict=True)]


# --------------------------------------------------------------------------------------------
# The RL prompt set.
# --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class RLPrompt:
    """One RL problem: the rendered prompt and its gold answer."""

    id: str
    problem: str
    answer: str
    prompt: str  # rendered with frontload.corpus.chat.render_prompt
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
        from frontload.corpus.fingerprint import fingerprint

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


class PromptSampler:
    """A seeded, resumable order over the RL set: epochs of shuffled prompts, state = (epoch, position)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self.epoch, self.pos = 0, 0
        self._order = self._perm(0)

    def _perm(self, epoch: int) -> list[int]:
        order = list(range(self.n))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def take(self, k: int) -> list[int]:
        """The next ``k`` prompt indices."""
        out = []
        while len(out) < k:
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._perm(self.epoch)
            out.append(self._order[self.pos])
            self.pos += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._perm(self.epoch)


__all__ = [
    "Reward",
    "RewardConfig",
    "RewardScorer",
    "RLPrompt",
    "PromptSampler",
    "group_advantages",
    "grpo_loss",
    "load_prompts",
]
