"""The GRPO objective: group-normalised advantages and the clipped policy-ratio loss, as pure tensor functions.

:func:`grpo_loss_fn` wraps them as the shared training loop's loss; the rest of RL (rewards,
prompts, rollouts) lives in its own modules, so a change to the objective is a change here.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def token_logprobs(model, tokens, position_ids, labels, temperature: float):
    """``log softmax(logits / T)[label]`` per position ``[b, s]`` (the sampler's distribution)."""
    import torch

    from frontload.train.model import forward

    logits = forward(model, tokens, position_ids).float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def grpo_loss_fn(objective: GRPOConfig, temperature: float):
    """The loop's loss for RL: GRPO summed over completion tokens, with the token count as its units.

    ``temperature`` is the sampler's: the ratio's log-probs come from the distribution that sampled.
    """

    def loss_fn(model, batch):
        logp = token_logprobs(model, batch["tokens"], batch["position_ids"], batch["labels"], temperature)
        loss, stats = grpo_loss(
            logp,
            batch["old_logprobs"],
            batch["advantages"],
            batch["loss_mask"],
            ref_logprobs=batch.get("ref_logprobs"),
            eps_low=objective.eps_low,
            eps_high=objective.eps_high,
            kl_coef=objective.kl_coef,
            num_tokens=1.0,  # a sum: the loop divides by the step's total completion tokens
        )
        return loss, batch["loss_mask"].sum(), {k: stats[k] for k in ("clip_frac", "kl", "ratio_mean")}

    return loss_fn
