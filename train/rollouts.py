"""RL rollouts: sample a group of completions per prompt, score them, and serve them as the loop's batches.

:class:`GRPOBatches` is the RL phase's batch source for the one training loop: every
``updates_per_step`` optimiser steps it samples a fresh :class:`Rollout` (through
:mod:`frontload.train.sampling`, the same samplers evaluation uses), scores it with the rewards,
turns it into padded training tensors with advantages and old-policy log-probs, and hands out its
minibatches in a seeded order.

Across data-parallel ranks each rank samples a contiguous share of the step's prompts, whole
groups, so group-relative advantages need no exchange; completion ``k`` of prompt ``i`` draws
from a stream seeded by the step and ``i``'s place among all the step's prompts, so one rank and
several ranks sample the same completions. Rows are numbered globally (prompt-major), the
minibatch order is drawn over all rows on every rank alike, and each rank trains on its own rows
of each minibatch; the rollout statistics are computed from every rank's rewards.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frontload.train.prompts import PromptMix, RLPrompt
from frontload.train.rewards import Reward, RewardScorer
from frontload.train.rl_loss import group_advantages, token_logprobs

if TYPE_CHECKING:
    from frontload.train.rl import RLConfig


@dataclass(kw_only=True)
class Rollout:
    """One GRPO step's rollout batch, padded into training tensors (rows prompt-major, groups contiguous)."""

    rl_step: int  # 1-based GRPO step
    prompts: list[RLPrompt]
    completions: list[Any]  # frontload.train.sampling.Completion per row
    rewards: list[Reward]
    tensors: dict[str, Any]  # tokens, labels, loss_mask, position_ids, old_logprobs, ref_logprobs?, advantages
    lengths: list[int]  # real length (prompt + completion - 1) of each row's training sequence
    train_rows: list[int]  # global rows the optimiser steps use (zero-variance groups left out when skipping)
    stats: dict[str, float]
    row_offset: int = 0  # global index of this rank's first row (its first prompt's index times the group size)
    total_rows: int = 0  # rows of the whole step over all data-parallel ranks


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
        self.sampler = None  # frontload.train.sampling.Sampler, opened on first use
        self._sampler_step: int | None = None  # optimiser step whose weights the sampler holds
        self.timings: dict[str, float] = {}
        self._t_batches = 0.0
        from megatron.core import parallel_state

        self.dp_rank, self.dp_size = 0, 1  # one process unless Megatron's groups say otherwise
        if parallel_state.model_parallel_is_initialized():
            self.dp_rank = parallel_state.get_data_parallel_rank()
            self.dp_size = parallel_state.get_data_parallel_world_size()

    # -- sampling -------------------------------------------------------------------------
    def _rollout_seed(self, rl_step: int) -> int:
        from frontload.core.fingerprint import fingerprint

        return int(fingerprint(self.config.seed, "rollout", rl_step), 16) % (2**31 - 1)

    def _sample(self, texts: list[str], seed: int, prompt_offset: int = 0) -> tuple[list[Any], bool]:
        """Completions (prompt-major) and whether their log-probs must be recomputed by the trainer."""
        import time

        from frontload.train.model import unwrap
        from frontload.train.sampling import open_sampler

        cfg = self.config
        policy = unwrap(self.state.model)
        if self.sampler is None:
            self.sampler = open_sampler(
                cfg.rollout_backend,
                policy,
                self.tokenizer,
                model_config=self.state.model_config,
                tokenizer_dir=self.state.tokenizer_dir,
                work_dir=Path(cfg.run_dir),
                seed=cfg.seed,
                batch_size=cfg.generation_batch,
                kv_cache_gib=cfg.vllm_kv_cache_gib,
            )
            self._sampler_step = self.state.step
        if self._sampler_step != self.state.step:
            self.timings["sync_s"] += self.sampler.update_weights(policy)
            self._sampler_step = self.state.step
        t0 = time.perf_counter()
        out = self.sampler.generate(
            texts,
            n=cfg.group_size,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=seed,
            prompt_offset=prompt_offset,
        )
        self.timings["generate_s"] += time.perf_counter() - t0
        return out, self.sampler.recompute_logprobs

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
                        token_logprobs(
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
        every = [self.prompts[name][i] for name, i in self.order.indices((rl_step - 1) * P, P)]
        lo = self.dp_rank * P // self.dp_size
        chosen = every[lo : (self.dp_rank + 1) * P // self.dp_size]  # this rank's whole groups
        completions, recompute = self._sample([p.prompt for p in chosen], self._rollout_seed(rl_step), lo)
        t0 = time.perf_counter()
        errors_before = self.scorer.errors
        rewards = self.scorer.score_batch(
            [chosen[c.prompt_index].answer for c in completions], [c.text for c in completions]
        )
        self.timings["reward_s"] = time.perf_counter() - t0
        reward_t = torch.tensor([r.reward for r in rewards], dtype=torch.float32)
        advantages, zero_var = group_advantages(reward_t, G, std_normalize=cfg.loss.std_normalize)

        t, lengths, old = self._tensors(completions, recompute)
        t["advantages"] = advantages
        mask = t["loss_mask"]
        t0 = time.perf_counter()
        # A vLLM sampler's numerics differ from the trainer's: the ratio's denominator is recomputed here.
        t["old_logprobs"] = self._forward_logprobs(self.state.model, t) * mask if recompute else old
        if self.reference is not None:
            t["ref_logprobs"] = self._forward_logprobs(self.reference, t) * mask
        self.timings["logprobs_s"] = time.perf_counter() - t0

        # Every rank's rewards, in global row order: the statistics and the choice of training rows
        # are then the same on all ranks and the same as one rank's.
        shares = self._all_ranks(
            {
                "rewards": [r.reward for r in rewards],
                "verdicts": [r.verdict for r in rewards],
                "lengths": [len(c.token_ids) for c in completions],
                "truncated": [c.finish_reason == "length" for c in completions],
                "zero_var": [bool(z) for z in zero_var],
                "errors": self.scorer.errors - errors_before,
            }
        )
        every_reward = torch.tensor([x for sh in shares for x in sh["rewards"]], dtype=torch.float32)
        every_zero_var = [z for sh in shares for z in sh["zero_var"]]
        verdicts = [v for sh in shares for v in sh["verdicts"]]
        comp_lens = [n for sh in shares for n in sh["lengths"]]
        total = len(verdicts)
        rows = list(range(total))
        if cfg.loss.skip_zero_variance:
            kept = [i for i in rows if not every_zero_var[i // G]]
            rows = kept or rows  # every group flat: train on all (only the KL term moves the policy)
        stats = {
            "rl_step": rl_step,
            "reward_mean": float(every_reward.mean()),
            "reward_std": float(every_reward.std()) if total > 1 else 0.0,
            "accuracy": verdicts.count("correct") / total,
            "zero_variance_groups": sum(every_zero_var),
            "verifier_errors": sum(sh["errors"] for sh in shares),
            "completion_len_mean": sum(comp_lens) / total,
            "truncated_frac": sum(t for sh in shares for t in sh["truncated"]) / total,
            "trained_sequences": len(rows),
        }
        self._log(rl_step, chosen, completions, rewards, advantages)
        return Rollout(
            rl_step=rl_step,
            prompts=chosen,
            completions=completions,
            rewards=rewards,
            tensors=t,
            lengths=lengths,
            train_rows=rows,
            stats=stats,
            row_offset=lo * G,
            total_rows=total,
        )

    def _tensors(self, completions: list[Any], recompute: bool) -> tuple[dict[str, Any], list[int], Any]:
        """Padded training tensors of the completions, their lengths, and the sampler's log-probs (if kept)."""
        import torch

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
        }
        return t, lengths, old

    def _log(self, rl_step: int, chosen: list[RLPrompt], completions: list[Any], rewards: list[Reward], advantages):
        """One ``rollouts`` event per completion: what was asked, answered, and how it scored."""
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

    def _all_ranks(self, share: dict[str, Any]) -> list[dict[str, Any]]:
        """``share`` of every data-parallel rank, in rank order (= global prompt order)."""
        if self.dp_size == 1:
            return [share]
        import torch.distributed as dist
        from megatron.core import parallel_state

        out: list[Any] = [None] * self.dp_size
        dist.all_gather_object(out, share, group=parallel_state.get_data_parallel_group_gloo())
        return out

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
        local = range(r.row_offset, r.row_offset + len(r.completions))
        # This rank's rows of the (global) minibatch; another rank may hold all of them, then none here.
        rows = [j - r.row_offset for j in self.minibatch_rows(r, update) if j in local]
        t = r.tensors
        out = []
        mb = self.config.micro_batch
        for i in range(0, len(rows), mb):
            idx = rows[i : i + mb]
            s = max(r.lengths[j] for j in idx)  # trim this micro batch's padding
            sel = {k: v[idx] for k, v in t.items()}
            batch = {k: (v[:, :s] if v.dim() == 2 else v) for k, v in sel.items()}
            batch["source"] = [r.prompts[j // self.config.group_size].source or "rl" for j in idx]
            batch["index"] = [(rl_step - 1) * r.total_rows + r.row_offset + j for j in idx]
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
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None
