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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from frontload.core.chat import parse_response, render_prompt
from frontload.core.errors import FrontloadError

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
    mode: str = "math"  # verifier mode passed to verify_answer ("math", "exact", "numeric", "choice")

    def __post_init__(self) -> None:
        from frontload.core.config import ConfigError
        from frontload.filters.verify import MODES

        if self.mode not in MODES:
            # Caught here: at scoring time a bad mode would turn every completion into a verifier error.
            raise ConfigError("mode", f"must be one of {list(MODES)}, got {self.mode!r}")
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
        from frontload.corpus.readers import read_documents

        # The corpus stage's checked reader: the same files as every reader (hidden files and backups
        # skipped), and a damaged line is an error naming its file and line, not a silent gap.
        for i, doc in enumerate(read_documents([data], on_error="raise")):
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


# --------------------------------------------------------------------------------------------
# The RL phase.
# --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class GRPOConfig:
    """The GRPO objective."""

    eps_low: float = 0.2  # lower clip of the policy ratio: 1 - eps_low
    eps_high: float = 0.2  # upper clip: 1 + eps_high (DAPO's "clip higher" uses 0.28)
    kl_coef: float = 0.0  # weight of the k3 KL to the frozen reference (the SFT checkpoint); 0 = no reference
    std_normalize: bool = True  # divide group-centred rewards by the group's std (False = Dr. GRPO)
    skip_zero_variance: bool = True  # leave groups whose rewards are all equal out of the optimiser steps

    def __post_init__(self) -> None:
        from frontload.core.config import ConfigError

        if not (0 <= self.eps_low < 1) or self.eps_high < 0:
            raise ConfigError(
                "eps_low", f"need 0 <= eps_low < 1 and eps_high >= 0, got {self.eps_low}, {self.eps_high}"
            )
        if self.kl_coef < 0:
            raise ConfigError("kl_coef", f"must be >= 0, got {self.kl_coef}")


def _rl_optim():
    from frontload.train.optim import OptimConfig

    # RL nudges a fine-tuned model: small constant rate, no weight decay (it would pull away from SFT).
    return OptimConfig(lr=1e-5, min_lr=1e-5, schedule="constant", weight_decay=0.0, clip_grad=1.0)


@dataclass(kw_only=True)
class RLConfig:
    """A GRPO run from an SFT checkpoint on an RL prompt set."""

    run_dir: str  # run folder: config.json, events/, checkpoints/
    init_from: str  # the SFT checkpoint (or its run folder: latest checkpoint); also the KL reference
    prompts: str | dict[str, str]  # RL set: a corpus folder or JSONL file (question/answer), or {name: path, ...}
    prompt_weights: dict[str, float] = field(default_factory=dict)  # share of each named set; {} = by size
    steps: int = 10  # GRPO steps (rollout batches)
    prompts_per_step: int = 4  # prompts sampled per GRPO step
    group_size: int = 4  # completions per prompt (the GRPO group)
    max_new_tokens: int = 64  # completion budget (also capped by the model's context)
    temperature: float = 1.0  # sampling temperature; the ratio's log-probs use the same temperature
    top_p: float = 1.0  # nucleus sampling
    minibatches: int = 2  # optimiser steps per pass over a rollout batch
    epochs: int = 1  # passes over each rollout batch (optimiser steps per GRPO step = minibatches * epochs)
    micro_batch: int = 8  # sequences per forward/backward
    generation_batch: int = 64  # sequences decoded together by the in-process sampler
    loss: GRPOConfig = field(default_factory=GRPOConfig)  # clipping, KL, advantage normalisation
    reward: RewardConfig = field(default_factory=RewardConfig)  # verifier and format rewards
    optim: Any = field(default_factory=_rl_optim)  # OptimConfig: AdamW and schedule (default constant 1e-5)
    rollout_backend: Literal["megatron", "vllm"] = "megatron"  # in-process KV-cache sampler, or a vLLM engine
    vllm_kv_cache_gib: float = 1.0  # VLLM_CPU_KVCACHE_SPACE when the environment does not set it
    log_every: int = 1  # metrics event every N optimiser steps
    save_every: int = 0  # checkpoint every N GRPO steps (0 = only at the end)
    keep_last: int | None = None  # keep only the newest N checkpoints
    exit_after: int | None = None  # stop after N GRPO steps in this invocation; rerunning resumes
    seed: int = 1234  # prompt order, sampling and RNG streams
    arm: str | None = None  # study arm (recorded in config.json)
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        from frontload.core.config import ConfigError, as_dict, from_mapping
        from frontload.train.optim import OptimConfig

        if isinstance(self.loss, dict):
            self.loss = from_mapping(GRPOConfig, self.loss, where="loss")
        if isinstance(self.reward, dict):
            self.reward = from_mapping(RewardConfig, self.reward, where="reward")
        if isinstance(self.optim, dict):
            table = {**as_dict(_rl_optim()), **self.optim}
            if "lr" in self.optim and "min_lr" not in self.optim:
                table["min_lr"] = self.optim["lr"]  # the default schedule is constant: a lone lr means that rate
            self.optim = from_mapping(OptimConfig, table, where="optim")
        for name in ("steps", "prompts_per_step", "minibatches", "epochs", "micro_batch", "generation_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        names = set(self.prompts) if isinstance(self.prompts, dict) else set()
        if isinstance(self.prompts, dict) and not self.prompts:
            raise ConfigError("prompts", "names no prompt set")
        for name, w in self.prompt_weights.items():
            if name not in names:
                raise ConfigError(f"prompt_weights.{name}", f"is not a named prompt set (sets: {sorted(names)})")
            if w < 0:
                raise ConfigError(f"prompt_weights.{name}", f"must be >= 0, got {w}")
        if self.prompt_weights and (set(self.prompt_weights) != names or not sum(self.prompt_weights.values()) > 0):
            raise ConfigError("prompt_weights", f"give a weight for every set {sorted(names)}, not all zero")
        if self.group_size < 2:
            raise ConfigError("group_size", f"GRPO needs at least 2 completions per prompt, got {self.group_size}")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ConfigError("temperature", f"GRPO samples its groups: must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.rollout_backend not in ("megatron", "vllm"):
            raise ConfigError("rollout_backend", f"must be 'megatron' or 'vllm', got {self.rollout_backend!r}")
        if self.save_every < 0 or self.log_every < 1:
            raise ConfigError("save_every", "save_every must be >= 0 and log_every >= 1")
        if self.exit_after is not None and self.exit_after < 1:
            raise ConfigError("exit_after", f"must be >= 1, got {self.exit_after}")

    @property
    def updates_per_step(self) -> int:
        """Optimiser steps per GRPO step."""
        return self.minibatches * self.epochs


def _token_logprobs(model, tokens, position_ids, labels, temperature: float):
    """``log softmax(logits / T)[label]`` per position ``[b, s]`` (the sampler's distribution)."""
    import torch

    from frontload.train.model import forward

    logits = forward(model, tokens, position_ids).float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


@dataclass(kw_only=True)
class Rollout:
    """One GRPO step's rollout batch, padded into training tensors (rows prompt-major, groups contiguous)."""

    rl_step: int  # 1-based GRPO step
    prompts: list[RLPrompt]
    completions: list[Any]  # frontload.train.generate.Completion per row
    rewards: list[Reward]
    tensors: dict[str, Any]  # tokens, labels, loss_mask, position_ids, old_logprobs, ref_logprobs?, advantages
    lengths: list[int]  # real length (prompt + completion - 1) of each row's training sequence
    train_rows: list[int]  # rows the optimiser steps use (zero-variance groups left out when skipping)
    stats: dict[str, float]


class GRPOBatches:
    """The RL phase's batch source for the shared loop: a fresh rollout every ``updates_per_step`` steps.

    ``batches(step, consumed)`` returns the micro batches of optimiser step ``step``: GRPO step
    ``step // U`` (U = minibatches × epochs) samples a rollout batch the first time it is asked for
    and serves its minibatches in a seeded order; ``on_step`` adds that rollout's reward statistics
    and timings to the loop's metrics event.
    """

    def __init__(
        self, *, config: RLConfig, state, tokenizer, prompts: dict[str, list[RLPrompt]], run, reference=None
    ) -> None:
        self.config = config
        self.state = state
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.order = PromptMix({k: len(v) for k, v in prompts.items()}, config.prompt_weights, config.seed)
        self.run = run
        self.reference = reference
        self.scorer = RewardScorer(config.reward)
        self.current: Rollout | None = None
        self.engine = None  # VLLMRollouts, started on first use
        self._engine_step: int | None = None  # optimiser step whose weights the engine holds
        self.timings: dict[str, float] = {}
        self._t_batches = 0.0

    # -- sampling -------------------------------------------------------------------------
    def _rollout_seed(self, rl_step: int) -> int:
        from frontload.core.fingerprint import fingerprint

        return int(fingerprint(self.config.seed, "rollout", rl_step), 16) % (2**31 - 1)

    def _sample(self, texts: list[str], seed: int) -> tuple[list[Any], bool]:
        """Completions (prompt-major) and whether their log-probs must be recomputed by the trainer."""
        import time

        from frontload.train.model import unwrap

        cfg = self.config
        policy = unwrap(self.state.model)
        sampling = dict(
            n=cfg.group_size,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=seed,
        )
        if cfg.rollout_backend == "vllm":
            from frontload.train.rl_vllm import VLLMRollouts

            if self.engine is None:
                self.engine = VLLMRollouts(
                    policy,
                    self.state.model_config,
                    self.tokenizer,
                    self.state.tokenizer_dir,
                    Path(cfg.run_dir),
                    seed=cfg.seed,
                    kv_cache_gib=cfg.vllm_kv_cache_gib,
                )
                self._engine_step = self.state.step
            if self._engine_step != self.state.step:
                self.timings["sync_s"] += self.engine.update_weights(policy)
                self._engine_step = self.state.step
            t0 = time.perf_counter()
            out = self.engine.generate(texts, **sampling)
            self.timings["generate_s"] += time.perf_counter() - t0
            return out, True
        from frontload.train.generate import generate

        t0 = time.perf_counter()
        out = generate(policy, self.tokenizer, texts, batch_size=cfg.generation_batch, **sampling)
        self.timings["generate_s"] += time.perf_counter() - t0
        return out, False

    def _forward_logprobs(self, model, t: dict[str, Any]):
        """Log-probs of every row under ``model``, no grad, in micro batches."""
        import torch

        rows = t["tokens"].shape[0]
        mb = self.config.micro_batch
        out = []
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for i in range(0, rows, mb):
                    sl = slice(i, i + mb)
                    out.append(
                        _token_logprobs(
                            model, t["tokens"][sl], t["position_ids"][sl], t["labels"][sl], self.config.temperature
                        )
                    )
        finally:
            model.train(was_training)
        return torch.cat(out)

    def rollout(self, rl_step: int) -> Rollout:
        """Sample, score and tensorise GRPO step ``rl_step`` (1-based)."""
        import time

        import torch

        cfg = self.config
        P, G = cfg.prompts_per_step, cfg.group_size
        self.timings = {"generate_s": 0.0, "logprobs_s": 0.0, "sync_s": 0.0, "reward_s": 0.0}
        chosen = [self.prompts[name][i] for name, i in self.order.indices((rl_step - 1) * P, P)]
        completions, recompute = self._sample([p.prompt for p in chosen], self._rollout_seed(rl_step))
        t0 = time.perf_counter()
        errors_before = self.scorer.errors
        rewards = self.scorer.score_batch(
            [chosen[c.prompt_index].answer for c in completions], [c.text for c in completions]
        )
        self.timings["reward_s"] = time.perf_counter() - t0
        reward_t = torch.tensor([r.reward for r in rewards], dtype=torch.float32)
        advantages, zero_var = group_advantages(reward_t, G, std_normalize=cfg.loss.std_normalize)

        # Row i = prompt_ids + completion ids; position k predicts token k + 1, so completion token j sits
        # at label position len(prompt) - 1 + j. Right padding never reaches a real position (causal).
        seqs = [list(c.prompt_ids) + list(c.token_ids) for c in completions]
        lengths = [len(x) - 1 for x in seqs]
        S = max(lengths)
        N = len(seqs)
        pad = int(self.tokenizer.pad_id)
        tokens = torch.full((N, S), pad, dtype=torch.long)
        labels = torch.full((N, S), pad, dtype=torch.long)
        mask = torch.zeros((N, S), dtype=torch.float32)
        old = torch.zeros((N, S), dtype=torch.float32)
        for i, (x, c) in enumerate(zip(seqs, completions)):
            n = len(x) - 1
            tokens[i, :n] = torch.tensor(x[:-1])
            labels[i, :n] = torch.tensor(x[1:])
            start = len(c.prompt_ids) - 1
            mask[i, start:n] = 1.0
            if not recompute:
                old[i, start:n] = torch.tensor(c.logprobs, dtype=torch.float32)
        t = {
            "tokens": tokens,
            "labels": labels,
            "loss_mask": mask,
            "position_ids": torch.arange(S)[None].expand(N, S).contiguous(),
            "advantages": advantages,
        }
        t0 = time.perf_counter()
        # A vLLM sampler's numerics differ from the trainer's: the ratio's denominator is recomputed here.
        t["old_logprobs"] = self._forward_logprobs(self.state.model, t) * mask if recompute else old
        if self.reference is not None:
            t["ref_logprobs"] = self._forward_logprobs(self.reference, t) * mask
        self.timings["logprobs_s"] = time.perf_counter() - t0

        rows = list(range(N))
        if cfg.loss.skip_zero_variance:
            kept = [i for i in rows if not bool(zero_var[i // G])]
            rows = kept or rows  # every group flat: train on all (only the KL term moves the policy)
        verdicts = [r.verdict for r in rewards]
        comp_lens = [len(c.token_ids) for c in completions]
        stats = {
            "rl_step": rl_step,
            "reward_mean": float(reward_t.mean()),
            "reward_std": float(reward_t.std()) if N > 1 else 0.0,
            "accuracy": verdicts.count("correct") / N,
            "zero_variance_groups": int(zero_var.sum()),
            "verifier_errors": self.scorer.errors - errors_before,
            "completion_len_mean": sum(comp_lens) / N,
            "truncated_frac": sum(c.finish_reason == "length" for c in completions) / N,
            "trained_sequences": len(rows),
        }
        for i, (c, r) in enumerate(zip(completions, rewards)):
            p = chosen[c.prompt_index]
            self.run.log(
                "rollouts",
                step=rl_step,
                prompt_id=p.id,
                sample=c.sample_index,
                prompt=p.prompt,
                completion=c.text,
                gold=p.answer,
                prediction=r.prediction,
                reward=r.reward,
                advantage=float(advantages[i]),
                verdict=r.verdict,
                length=len(c.token_ids),
                finish_reason=c.finish_reason,
                error=r.error,
            )
        return Rollout(
            rl_step=rl_step,
            prompts=chosen,
            completions=completions,
            rewards=rewards,
            tensors=t,
            lengths=lengths,
            train_rows=rows,
            stats=stats,
        )

    # -- the loop's two hooks -------------------------------------------------------------
    def minibatch_rows(self, rollout: Rollout, update: int) -> list[int]:
        """Rows of optimiser step ``update`` (0 .. U-1) within a rollout: epoch-shuffled, split in minibatches."""
        cfg = self.config
        epoch, k = divmod(update, cfg.minibatches)
        rows = list(rollout.train_rows)
        random.Random(f"{cfg.seed}:{rollout.rl_step}:{epoch}").shuffle(rows)
        n, m = len(rows), cfg.minibatches
        if n >= m:
            return rows[k * n // m : (k + 1) * n // m]
        return [rows[k % n]]  # fewer rows than minibatches: reuse rows rather than step on nothing

    def __call__(self, step: int, consumed: int) -> list[dict[str, Any]]:
        import time

        U = self.config.updates_per_step
        rl_step, update = step // U + 1, step % U
        if self.current is None or self.current.rl_step != rl_step:
            self.current = self.rollout(rl_step)
        r = self.current
        rows = self.minibatch_rows(r, update)
        t = r.tensors
        out = []
        mb = self.config.micro_batch
        for i in range(0, len(rows), mb):
            idx = rows[i : i + mb]
            s = max(r.lengths[j] for j in idx)  # trim this micro batch's padding
            sel = {k: v[idx] for k, v in t.items()}
            batch = {k: (v[:, :s] if v.dim() == 2 else v) for k, v in sel.items()}
            batch["source"] = [r.prompts[j // self.config.group_size].source or "rl" for j in idx]
            batch["index"] = [(rl_step - 1) * len(r.completions) + j for j in idx]
            out.append(batch)
        self._t_batches = time.perf_counter()
        return out

    def on_step(self, state, record: dict[str, Any]) -> dict[str, Any]:
        """Rollout statistics and the step's time split, added to the loop's metrics event."""
        import time

        fields = dict(self.current.stats) if self.current is not None else {}
        fields["train_s"] = time.perf_counter() - self._t_batches
        fields.update(self.timings)
        self.timings = {k: 0.0 for k in self.timings}  # count a rollout's costs once, on its first update
        return fields

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def grpo_loss_fn(config: RLConfig):
    """The loop's loss for RL: GRPO summed over completion tokens, with the token count as its units."""

    def loss_fn(model, batch):
        logp = _token_logprobs(model, batch["tokens"], batch["position_ids"], batch["labels"], config.temperature)
        loss, stats = grpo_loss(
            logp,
            batch["old_logprobs"],
            batch["advantages"],
            batch["loss_mask"],
            ref_logprobs=batch.get("ref_logprobs"),
            eps_low=config.loss.eps_low,
            eps_high=config.loss.eps_high,
            kl_coef=config.loss.kl_coef,
            num_tokens=1.0,  # a sum: the loop divides by the step's total completion tokens
        )
        return loss, batch["loss_mask"].sum(), {k: stats[k] for k in ("clip_frac", "kl", "ratio_mean")}

    return loss_fn


def _prompt_set_fingerprint(sets: dict[str, list[RLPrompt]], weights: dict[str, float]) -> str:
    from frontload.core.fingerprint import fingerprint

    return fingerprint({k: [[p.id, p.prompt, p.answer] for p in v] for k, v in sets.items()}, weights)


def reference_fingerprint(ckpt_dir: str | os.PathLike) -> str:
    """Fingerprint of a checkpoint's weights (the KL reference an RL run is tied to)."""
    from frontload.core.fingerprint import fingerprint_files

    files = sorted(Path(ckpt_dir).glob("model_tp*_pp*.pt"))
    if not files:
        raise FrontloadError(f"{ckpt_dir}: no model_tp*_pp*.pt weights")
    return fingerprint_files(files)


def rl(config: RLConfig) -> Path:
    """Run (or resume) GRPO from ``config.init_from``; returns the final checkpoint folder."""
    from frontload.core.config import ConfigError, as_dict
    from frontload.core.events import RunFolder
    from frontload.corpus.tokenizer import load_tokenizer
    from frontload.train.checkpoint import latest_checkpoint, load_checkpoint, read_meta
    from frontload.train.loop import LoopConfig, TrainState, resolve_checkpoint, train_loop
    from frontload.train.model import model_config_from_dict
    from frontload.train.optim import build_optimizer
    from frontload.train.runtime import init_distributed

    run_dir = Path(config.run_dir)
    parent = resolve_checkpoint(config.init_from)
    meta = read_meta(parent)
    model_config = model_config_from_dict(meta["model"], where=f"{parent / 'meta.json'}: model")
    tokenizer_dir = parent / "tokenizer"
    if not tokenizer_dir.exists():
        raise FrontloadError(f"{tokenizer_dir}: the SFT checkpoint holds no tokenizer copy")
    tokenizer = load_tokenizer(tokenizer_dir)
    prompt_sets = load_prompt_sets(config.prompts)
    prompts_fp = _prompt_set_fingerprint(prompt_sets, config.prompt_weights)
    prompts = [p for v in prompt_sets.values() for p in v]
    ref_fp = reference_fingerprint(parent)
    longest = max(len(ids) for ids in tokenizer.encode_batch([p.prompt for p in prompts]))
    if longest >= model_config.seq_len:
        raise ConfigError(
            "prompts",
            f"{config.prompts}: a prompt has {longest} tokens, the model's context is {model_config.seq_len}",
        )

    rt = init_distributed(tp=model_config.tp, pp=model_config.pp, seed=config.seed)
    if rt.world_size > 1:
        raise FrontloadError("the RL phase runs in one process (rollouts are not split over ranks yet)")
    U = config.updates_per_step
    total = config.steps * U
    model = model_config.build()
    load_checkpoint(parent, model=model, load_rng=False)
    reference = None
    if config.loss.kl_coef > 0:
        reference = model_config.build()
        load_checkpoint(parent, model=reference, load_rng=False)
        reference.eval().requires_grad_(False)
    optimizer = build_optimizer(model, config.optim, total, bf16=model_config.bf16)
    rl_extra = {
        "reference_checkpoint": str(parent),
        "reference_fingerprint": ref_fp,
        "prompts_fingerprint": prompts_fp,
    }

    class _RLState(TrainState):
        def checkpoint_extra(self):  # what ties an RL checkpoint to its reference model and prompt set
            return {"rl_step": self.step // U, **rl_extra}

    state = _RLState(
        model=optimizer.model,
        model_config=model_config,
        optimizer=optimizer,
        phase="rl",
        parent=str(parent),
        mix_plan_fingerprint=prompts_fp,  # the RL set is this phase's data plan
        tokenizer_dir=str(tokenizer_dir),
        tokenizer_fingerprint=tokenizer.fingerprint,
    )
    resumed = latest_checkpoint(run_dir)
    if resumed is not None:
        rmeta = read_meta(resumed)
        if rmeta.get("reference_fingerprint") != ref_fp:
            raise ConfigError(
                "init_from",
                f"{resumed} was trained against reference {rmeta.get('reference_fingerprint')} but {parent} has "
                f"weights {ref_fp}; use a new run folder",
            )
        if rmeta.get("prompts_fingerprint") != prompts_fp:
            raise ConfigError(
                "prompts", f"{config.prompts} is not the RL set {resumed} was trained on; use a new run folder"
            )
        state.resume(run_dir)
        state.parent = str(parent)
    loop_cfg = LoopConfig(
        steps=total,
        global_batch=config.prompts_per_step * config.group_size,
        micro_batch=config.micro_batch,
        log_every=config.log_every,
        save_every=config.save_every * U,
        keep_last=config.keep_last,
        exit_after=config.exit_after * U if config.exit_after else None,
        progress=config.progress,
    )
    run = RunFolder(
        run_dir,
        stage="rl",
        config=as_dict(config),
        arm=config.arm,
        phase="rl",
        parent=str(parent),
        rank=rt.rank,
        extra={"reference_fingerprint": ref_fp, "prompts_fingerprint": prompts_fp},
    )
    source = GRPOBatches(
        config=config, state=state, tokenizer=tokenizer, prompts=prompt_sets, run=run, reference=reference
    )
    try:
        last = train_loop(state, source, grpo_loss_fn(config), loop_cfg, run, on_step=source.on_step)
    finally:
        source.close()
        run.close()
    return last or latest_checkpoint(run_dir)


# --------------------------------------------------------------------------------------------
# Command line: ``frontload train rl CONFIG.toml``.
# --------------------------------------------------------------------------------------------

_CLI_OVERRIDES = (
    "run_dir",
    "init_from",
    "prompts",
    "steps",
    "prompts_per_step",
    "group_size",
    "save_every",
    "exit_after",
    "rollout_backend",
    "seed",
)


def _run_rl(args) -> int:
    from frontload.core.config import from_mapping
    from frontload.train.cli import read_phase_table

    table = read_phase_table(args.config)
    overrides = {k: getattr(args, k) for k in _CLI_OVERRIDES if getattr(args, k, None) is not None}
    if args.no_progress:
        overrides["progress"] = False
    print(rl(from_mapping(RLConfig, {**table, **overrides}, where=args.config)))
    return 0


def add_commands(train_subparsers) -> None:
    """Register ``frontload train rl`` (called by ``frontload.train.cli``)."""
    p = train_subparsers.add_parser("rl", help="GRPO with verifiable rewards from an SFT checkpoint")
    p.add_argument("config", help="TOML file whose top-level keys are RLConfig fields ([loss], [reward], [optim])")
    p.add_argument("--run-dir", dest="run_dir", help="run folder (overrides run_dir); rerunning resumes from it")
    p.add_argument("--init-from", dest="init_from", help="SFT checkpoint or run folder to start from")
    p.add_argument("--prompts", help="RL set: corpus folder or JSONL file with question/answer")
    p.add_argument("--steps", type=int, help="GRPO steps (rollout batches)")
    p.add_argument("--prompts-per-step", dest="prompts_per_step", type=int, help="prompts per GRPO step")
    p.add_argument("--group-size", dest="group_size", type=int, help="completions per prompt")
    p.add_argument("--save-every", dest="save_every", type=int, help="checkpoint every N GRPO steps")
    p.add_argument("--exit-after", dest="exit_after", type=int, help="stop after N GRPO steps; rerun to continue")
    p.add_argument(
        "--rollout-backend", dest="rollout_backend", choices=("megatron", "vllm"), help="who samples the rollouts"
    )
    p.add_argument("--seed", type=int, help="prompt order and sampling seed")
    p.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_rl)


__all__ = [
    "add_commands",
    "GRPOBatches",
    "GRPOConfig",
    "RLConfig",
    "Rollout",
    "grpo_loss_fn",
    "reference_fingerprint",
    "rl",
    "Reward",
    "RewardConfig",
    "RewardScorer",
    "RLPrompt",
    "PromptMix",
    "PromptOrder",
    "load_prompt_sets",
    "group_advantages",
    "grpo_loss",
    "load_prompts",
]
