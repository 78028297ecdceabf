"""Batched sampling from the Megatron-core model itself, with Megatron's static KV cache, on CPU or GPU.

:func:`generate` encodes the prompts, repeats each ``n`` times and decodes them together: one
prefill forward over the left-padded batch fills Megatron-core's ``StaticInferenceContext`` (the
KV cache its attention layers keep per layer), then one forward per new token reads from it. RL
calls it between optimizer steps for rollouts; evaluation calls it for greedy and sampled answers.

Invariants:

* Greedy decoding (``temperature=0``) is deterministic; sampled decoding depends only on ``seed``
  and each completion's (prompt, sample) index, never on batch size or on which other prompts are
  in the batch (each completion draws from its own generator).
* The model's train/eval mode is restored afterwards, and no autograd graph is built, so it is safe
  between optimizer steps.
* ``Completion.token_ids`` hold every sampled token including the stop token; ``Completion.text``
  is the decoded completion cut before the first stop string. ``logprobs[i]`` is the log-probability
  of ``token_ids[i]`` under the distribution it was sampled from: ``softmax(logits / temperature)``
  (``softmax(logits)`` for greedy), before top-p truncation — what a GRPO/PPO trainer recomputes
  with the same temperature.
* Padding never changes a result beyond float rounding: padded key positions are masked in every
  forward, and RoPE scores depend only on relative positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from frontload.core.chat import END
from frontload.core.errors import FrontloadError
from frontload.train.model import unwrap


@dataclass(kw_only=True)
class Completion:
    """One sampled continuation of one prompt."""

    prompt_index: int  # position of the prompt in the ``prompts`` list
    sample_index: int  # 0..n-1 among the samples of that prompt
    prompt_ids: list[int]  # the encoded prompt
    token_ids: list[int]  # generated ids, including the stop token when finish_reason == "stop"
    text: str  # decoded completion, cut before the first stop string
    finish_reason: str  # "stop" (a stop string or EOD) or "length" (max_new_tokens or the context ran out)
    logprobs: list[float] = field(default_factory=list)  # log-prob of each generated id (see module docstring)


def _sampling_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    # A fixed mixing of the three integers so every completion has its own independent stream.
    return (seed * 1_000_003 + prompt_index * 7_919 + sample_index * 104_729) % (2**63 - 1)


def _choose(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    generators: list[torch.Generator],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next ids ``[b]`` and their log-probs ``[b]`` from last-position logits ``[b, vocab]``."""
    logits = logits.float()
    if temperature <= 0.0:
        logp = torch.log_softmax(logits, dim=-1)
        ids = logits.argmax(dim=-1)
        return ids, logp.gather(-1, ids[:, None])[:, 0]
    logp = torch.log_softmax(logits / temperature, dim=-1)
    probs = logp.exp()
    order = None
    if top_p < 1.0:
        # Keep the smallest prefix (by probability) whose mass reaches top_p (the first token always survives).
        # Without truncation the vocabulary order serves as well, and the sort was a fifth of a wide decode step.
        probs, order = probs.sort(dim=-1, descending=True)
        cum = probs.cumsum(-1)
        probs = probs.masked_fill(cum - probs >= top_p, 0.0)
    cum = probs.cumsum(-1)
    # Inverse-CDF sampling with one uniform draw per row from that row's own generator: the first index whose
    # cumulative mass reaches u. u > 0, so a token of zero probability (a flat step of cum) is never picked.
    u = torch.stack([torch.rand((), generator=g) for g in generators]).to(cum.device) * cum[:, -1]
    u = u.clamp_min(torch.finfo(cum.dtype).tiny)
    pick = torch.searchsorted(cum, u[:, None]).clamp_max(cum.shape[-1] - 1)
    ids = (pick if order is None else order.gather(-1, pick))[:, 0]
    return ids, logp.gather(-1, ids[:, None])[:, 0]


def _stop_ids(tokenizer, stop: Sequence[str]) -> tuple[set[int], list[str]]:
    """Stop strings that are one token become ids (plus EOD); the others are matched on decoded text."""
    ids = {int(tokenizer.eod_id)}
    texts = []
    for s in stop:
        enc = tokenizer.encode(s)
        if len(enc) == 1:
            ids.add(int(enc[0]))
        else:
            texts.append(s)
    return ids, texts


def _ends_with_stop(tokenizer, ids: list[int], stop_texts: list[str]) -> bool:
    # Only the tail can hold a stop string that was not there one step earlier; a token decodes to at
    # least a third of a character (byte fallback), so a few times the string's length in tokens suffices.
    tail = ids[-(4 * max(len(s) for s in stop_texts) + 4) :]
    text = tokenizer.decode(tail)
    return any(s in text for s in stop_texts)


def _cut(text: str, stop_texts: list[str]) -> tuple[str, bool]:
    cuts = [i for i in (text.find(s) for s in stop_texts) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


@torch.no_grad()
def _decode_batch(
    model,
    rows: list[list[int]],
    *,
    max_new_tokens: int,
    context: int,
    temperature: float,
    top_p: float,
    generators: list[torch.Generator],
    stop_ids: set[int],
    stop_texts: list[str],
    tokenizer,
    pad_id: int,
) -> list[tuple[list[int], list[float], bool]]:
    """Generate for one batch of encoded prompts; ``(ids, logprobs, stopped)`` per row."""
    from megatron.core.inference.contexts import StaticInferenceContext

    from frontload.train import compat

    device = next(model.parameters()).device
    b = len(rows)
    plen = max(len(r) for r in rows)
    budget = min(max_new_tokens, context - plen)
    total = plen + budget
    tokens = torch.full((b, plen), pad_id, dtype=torch.long)
    is_pad = torch.zeros((b, total), dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, plen - len(r) :] = torch.tensor(r, dtype=torch.long)
        is_pad[i, : plen - len(r)] = True
    tokens, is_pad = tokens.to(device), is_pad.to(device)
    positions = torch.arange(total, device=device)[None].expand(b, -1)

    stopped = torch.zeros(b, dtype=torch.bool, device=device)
    if budget <= 0:
        return [([], [], False) for _ in range(b)]
    # Tokens and log-probs stay in tensors until the end: per-row Python bookkeeping at every step
    # cost as much as the forward itself once many samples decode together.
    out_ids = torch.zeros((b, budget), dtype=torch.long, device=device)
    out_lp = torch.zeros((b, budget), dtype=torch.float32, device=device)
    n_out = torch.zeros(b, dtype=torch.long, device=device)
    stop_t = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)

    ctx = StaticInferenceContext(b, total)
    # Prefill: causal within the prompt, and nobody attends to a left pad.
    mask = compat.causal_mask(plen, device) | is_pad[:, None, None, :plen]
    alive = torch.arange(b, device=device)  # batch rows still decoding -> original row index
    # No cuda_as_cpu() mode here: the inference path allocates on torch.cuda.current_device() (patched
    # by compat on CPU), and the mode's per-op Python hook costs about a third of a decode step.
    logits = model(tokens, positions[:, :plen], mask, inference_context=ctx, runtime_gather_output=True)
    ctx.increment_sequence_len_offset(plen)
    ctx.enable_decode_mode()
    gens = list(generators)
    for step in range(budget):
        ids, lp = _choose(logits[:, -1, :], temperature, top_p, gens)
        out_ids[alive, step] = ids
        out_lp[alive, step] = lp.float()
        n_out[alive] = step + 1
        done = torch.isin(ids, stop_t)
        if stop_texts:
            for j in (~done).nonzero()[:, 0].tolist():
                row = int(alive[j])
                done[j] = _ends_with_stop(tokenizer, out_ids[row, : step + 1].tolist(), stop_texts)
        stopped[alive[done]] = True
        keep = (~done).nonzero()[:, 0]
        if len(keep) == 0 or step == budget - 1:
            break
        if len(keep) < len(alive):
            # Finished rows leave the batch: shrink every layer's cache to the rows still decoding.
            for layer, (k, v) in ctx.key_value_memory_dict.items():
                ctx.key_value_memory_dict[layer] = (k[:, keep], v[:, keep])
            ctx.max_batch_size = len(keep)
            alive, ids = alive[keep], ids[keep]
            gens = [gens[j] for j in keep.tolist()]
        pos = ctx.sequence_len_offset
        step_mask = is_pad[alive][:, None, None, : pos + 1]
        logits = model(
            ids[:, None],
            positions[: len(alive), pos : pos + 1],
            step_mask,
            inference_context=ctx,
            runtime_gather_output=True,
        )
        ctx.increment_sequence_len_offset(1)
    lengths, ids_rows, lp_rows, flags = n_out.tolist(), out_ids.tolist(), out_lp.tolist(), stopped.tolist()
    return [(ids_rows[i][: lengths[i]], lp_rows[i][: lengths[i]], flags[i]) for i in range(b)]


def generate(
    model,
    tokenizer,
    prompts: Sequence[str | Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    n: int = 1,
    seed: int = 0,
    stop: Sequence[str] = (END,),
    batch_size: int = 64,
    progress: bool = False,
) -> list[Completion]:
    """Sample ``n`` completions per prompt (prompt-major order) with the model's KV cache.

    A prompt is text (encoded with ``tokenizer``, no BOS added) or a list of token ids used as is.

    ``temperature=0`` is greedy. Generation also stops at the tokenizer's EOD id and at the model's
    context length (``finish_reason="length"``). Prompts are batched ``batch_size`` rows at a time,
    longest first, so rows of similar length share a batch.
    """
    if max_new_tokens < 1:
        raise FrontloadError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if n < 1:
        raise FrontloadError(f"n must be >= 1, got {n}")
    if temperature < 0 or not (0.0 < top_p <= 1.0):
        raise FrontloadError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature} and {top_p}")
    bare = unwrap(model)
    if not (getattr(bare, "pre_process", True) and getattr(bare, "post_process", True)):
        raise FrontloadError("generate needs the whole model in one pipeline stage (pp=1)")
    context = int(getattr(bare, "max_sequence_length", 0)) or 1 << 30
    texts = [p for p in prompts if isinstance(p, str)]
    encoded_texts = iter(tokenizer.encode_batch(texts) if texts else [])
    encoded = [next(encoded_texts) if isinstance(p, str) else [int(t) for t in p] for p in prompts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise FrontloadError(f"prompt {i} is empty")
        if len(ids) >= context:
            raise FrontloadError(
                f"prompt {i} has {len(ids)} tokens; the model's context is {context}, leaving no room to generate"
            )
    stop_ids, stop_texts = _stop_ids(tokenizer, stop)
    rows = [(p, s) for p in range(len(encoded)) for s in range(n)]
    order = sorted(range(len(rows)), key=lambda r: -len(encoded[rows[r][0]]))
    results: dict[int, Completion] = {}
    was_training = bare.training
    bare.eval()
    try:
        from tqdm import tqdm

        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for chunk in tqdm(chunks, desc="generate", unit="batch", disable=not progress):
            gens = []
            for r in chunk:
                g = torch.Generator()
                g.manual_seed(_sampling_seed(seed, *rows[r]))
                gens.append(g)
            outs = _decode_batch(
                bare,
                [encoded[rows[r][0]] for r in chunk],
                max_new_tokens=max_new_tokens,
                context=context,
                temperature=temperature,
                top_p=top_p,
                generators=gens,
                stop_ids=stop_ids,
                stop_texts=stop_texts,
                tokenizer=tokenizer,
                pad_id=int(tokenizer.pad_id),
            )
            for r, (ids, lps, stopped) in zip(chunk, outs):
                text = tokenizer.decode(ids[:-1] if stopped and ids[-1] in stop_ids else ids)
                text, _ = _cut(text, list(stop))
                p, s = rows[r]
                results[r] = Completion(
                    prompt_index=p,
                    sample_index=s,
                    prompt_ids=list(encoded[p]),
                    token_ids=ids,
                    text=text,
                    finish_reason="stop" if stopped else "length",
                    logprobs=lps,
                )
    finally:
        bare.train(was_training)
    return [results[r] for r in range(len(rows))]


def sequence_logprobs(model, prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> list[float]:
    """Log-probs of ``completion_ids`` after ``prompt_ids`` from one full forward (no cache); for checks."""
    from frontload.train import compat

    bare = unwrap(model)
    ids = torch.tensor([*prompt_ids, *completion_ids], dtype=torch.long, device=next(bare.parameters()).device)
    was_training = bare.training
    bare.eval()
    try:
        with torch.no_grad(), compat.cuda_as_cpu():
            pos = torch.arange(len(ids), device=ids.device)[None]
            logits = bare(ids[None], pos, compat.causal_mask(len(ids), ids.device), runtime_gather_output=True)
    finally:
        bare.train(was_training)
    logp = torch.log_softmax(logits[0].float(), dim=-1)
    start = len(prompt_ids)
    return [float(logp[start - 1 + i, t]) for i, t in enumerate(completion_ids)] if completion_ids else []
