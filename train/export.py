"""Export a frontload checkpoint to the Hugging Face Llama format that transformers and vLLM load.

The Megatron-core GPTModel built by :class:`frontload.train.model.ModelConfig` is a Llama: the
mapping is one tensor per tensor except two fused projections, which are split:

* ``linear_qkv`` holds, per query group, that group's query heads then its one key and one value
  head; it becomes ``q_proj``, ``k_proj``, ``v_proj``;
* ``linear_fc1`` holds ``[gate; up]`` of the SwiGLU; it becomes ``gate_proj`` and ``up_proj``.

RoPE is non-interleaved on both sides, so no permutation of q/k rows is needed. With tied
embeddings ``lm_head.weight`` is left out and ``tie_word_embeddings`` is set.

Invariants: :func:`hf_state_dict` does no I/O and never changes the model (RL pushes its output into
a running vLLM); :func:`export_hf` writes into a temporary folder renamed onto ``out_dir`` only when
complete; the exported model's logits equal the Megatron model's within float rounding (tested).
An existing non-empty ``out_dir`` is replaced only with ``overwrite`` and only when it carries the
export's own marker (``frontload_export.json``); a folder that holds, or lies inside, the checkpoint
or tokenizer being read is never an output.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Any

from frontload.core.atomic import atomic_folder
from frontload.core.chat import END
from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import atomic_write_json

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
MARKER = "frontload_export.json"  # written last into every export; only a folder holding it may be replaced


def hf_state_dict(model, config) -> dict[str, Any]:
    """Megatron GPTModel weights under Hugging Face ``LlamaForCausalLM`` names (tensors share no storage)."""
    from megatron.core import parallel_state

    from frontload.train.model import unwrap

    if parallel_state.model_parallel_is_initialized() and (
        parallel_state.get_tensor_model_parallel_world_size() > 1
        or parallel_state.get_pipeline_model_parallel_world_size() > 1
    ):
        raise FrontloadError("export needs the whole model in one process: load the checkpoint with tp=1, pp=1")
    sd = {k: v for k, v in unwrap(model).state_dict().items() if not k.endswith("_extra_state")}
    heads, groups, hd = config.heads, config.kv_heads, config.head_dim
    per_group = heads // groups
    ffn = config.ffn_hidden

    def take(name: str):
        if name not in sd:
            raise FrontloadError(f"model has no weight {name!r}: not a frontload Llama-style GPTModel?")
        return sd.pop(name).detach()

    def norm(prefix: str, local: str, fused: str):
        # The local spec keeps RMSNorm as its own module; Transformer Engine fuses it into the next linear.
        return take(f"{prefix}.{local}") if f"{prefix}.{local}" in sd else take(f"{prefix}.{fused}")

    out: dict[str, Any] = {"model.embed_tokens.weight": take("embedding.word_embeddings.weight").clone()}
    for i in range(config.layers):
        p, q = f"decoder.layers.{i}", f"model.layers.{i}"
        out[f"{q}.input_layernorm.weight"] = norm(
            p, "input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight"
        ).clone()
        qkv = take(f"{p}.self_attention.linear_qkv.weight")
        hidden = qkv.shape[-1]
        qkv = qkv.view(groups, per_group + 2, hd, hidden)
        out[f"{q}.self_attn.q_proj.weight"] = qkv[:, :per_group].reshape(heads * hd, hidden).clone()
        out[f"{q}.self_attn.k_proj.weight"] = qkv[:, per_group].reshape(groups * hd, hidden).clone()
        out[f"{q}.self_attn.v_proj.weight"] = qkv[:, per_group + 1].reshape(groups * hd, hidden).clone()
        out[f"{q}.self_attn.o_proj.weight"] = take(f"{p}.self_attention.linear_proj.weight").clone()
        out[f"{q}.post_attention_layernorm.weight"] = norm(
            p, "pre_mlp_layernorm.weight", "mlp.linear_fc1.layer_norm_weight"
        ).clone()
        fc1 = take(f"{p}.mlp.linear_fc1.weight")
        out[f"{q}.mlp.gate_proj.weight"] = fc1[:ffn].clone()
        out[f"{q}.mlp.up_proj.weight"] = fc1[ffn:].clone()
        out[f"{q}.mlp.down_proj.weight"] = take(f"{p}.mlp.linear_fc2.weight").clone()
    out["model.norm.weight"] = take("decoder.final_layernorm.weight").clone()
    if not config.tied_embeddings:
        out["lm_head.weight"] = take("output_layer.weight").clone()
    sd.pop("output_layer.weight", None)  # a tied model may still list the shared weight here
    leftover = [k for k in sd if not k.startswith("rotary_pos_emb")]
    if leftover:
        raise FrontloadError(f"export does not know how to map {leftover[:3]} (model/config mismatch?)")
    return {k: v.contiguous() for k, v in out.items()}


def hf_config(config, tokenizer) -> dict[str, Any]:
    """``config.json`` contents of a ``LlamaForCausalLM`` equal to the frontload model ``config``."""
    from transformers import LlamaConfig

    kwargs: dict[str, Any] = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden,
        intermediate_size=config.ffn_hidden,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.kv_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.seq_len,
        rms_norm_eps=config.norm_eps,
        tie_word_embeddings=config.tied_embeddings,
        initializer_range=config.init_std,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=None,
        eos_token_id=int(tokenizer.eod_id),
        pad_token_id=int(tokenizer.pad_id),
        architectures=["LlamaForCausalLM"],
    )
    if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": float(config.rope_base)}
    else:  # transformers 4.x
        kwargs["rope_theta"] = float(config.rope_base)
    d = LlamaConfig(**kwargs).to_dict()
    d["torch_dtype"] = d["dtype"] = "bfloat16" if config.bf16 else "float32"
    return d


def _stop_ids(tokenizer) -> list[int]:
    ids = [int(tokenizer.eod_id)]
    # A tokenizer without the chat markers: EOD alone ends generation.
    with contextlib.suppress(FrontloadError):
        ids.insert(0, int(tokenizer.token_id(END)))
    return ids


def _copy_tokenizer(src: Path, dst: Path) -> None:
    if (src / "tokenizer.json").exists():
        for name in TOKENIZER_FILES:
            if (src / name).exists():
                shutil.copy2(src / name, dst / name)
    elif (src / "tokenizer.model").exists():
        from frontload.corpus.tokenizer import write_hf_files

        # Never ship tokenizer.model itself: transformers' own SentencePiece conversion gives other ids.
        write_hf_files(src / "tokenizer.model", dst)
    else:
        raise FrontloadError(f"{src}: checkpoint has no tokenizer.json or tokenizer.model to export")


def check_out_dir(out_dir: str | os.PathLike, *, overwrite: bool, sources: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Refuse an output folder that would destroy something: a source being read, or a folder that is no export.

    ``out_dir`` may not be, contain or lie inside any of ``sources`` (the checkpoint, the tokenizer). An
    existing non-empty ``out_dir`` needs ``overwrite`` and the export marker; the message says which is missing.
    """
    out = Path(out_dir)
    real = out.resolve()
    for src in sources:
        s = Path(src).resolve()
        if real == s or real.is_relative_to(s) or s.is_relative_to(real):
            raise FrontloadError(
                f"{out}: is or overlaps the checkpoint being exported ({src}); choose an output folder outside it"
            )
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise FrontloadError(
                f"{out}: exists, is not empty and is not a previous export (no {MARKER}); "
                "choose another output folder (--overwrite replaces only a previous export)"
            )
        if not overwrite:
            raise FrontloadError(f"{out}: holds a previous export; pass --overwrite to replace it")
    return out


def export_model(
    model,
    config,
    tokenizer_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    meta: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (a frontload GPTModel) and its tokenizer as a Hugging Face Llama folder.

    ``overwrite`` allows replacing a previous export (a folder carrying :data:`MARKER`), nothing else.
    """
    from safetensors.torch import save_file

    from frontload.corpus.tokenizer import load_tokenizer

    tokenizer_dir = Path(tokenizer_dir)
    out_dir = check_out_dir(out_dir, overwrite=overwrite, sources=(tokenizer_dir,))
    tokenizer = load_tokenizer(tokenizer_dir)
    state = {k: v.cpu() for k, v in hf_state_dict(model, config).items()}
    # The check above said why a folder may go; the helper re-checks the marker at the last moment.
    with atomic_folder(out_dir, replace=lambda p: overwrite and (p / MARKER).is_file(), what="model export") as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        atomic_write_json(tmp / "config.json", hf_config(config, tokenizer))
        atomic_write_json(
            tmp / "generation_config.json",
            {"eos_token_id": _stop_ids(tokenizer), "pad_token_id": int(tokenizer.pad_id), "do_sample": False},
        )
        _copy_tokenizer(tokenizer_dir, tmp)
        atomic_write_json(tmp / MARKER, {"tokenizer_fingerprint": tokenizer.fingerprint, **(meta or {})})
    return out_dir


def export_hf(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Export checkpoint ``ckpt_dir`` to ``out_dir`` (config.json, model.safetensors, tokenizer files).

    ``out_dir`` must be new, empty, or (with ``overwrite``) a previous export; never the checkpoint itself.
    """
    from frontload.core.config import as_dict
    from frontload.train.checkpoint import load_model

    ckpt_dir = Path(ckpt_dir)
    # Checked before the model is loaded, so a refused folder costs nothing.
    check_out_dir(out_dir, overwrite=overwrite, sources=(ckpt_dir,))
    model, config, meta = load_model(ckpt_dir)
    return export_model(
        model,
        config,
        ckpt_dir / "tokenizer",
        out_dir,
        {"checkpoint": str(ckpt_dir), "phase": meta.get("phase"), "step": meta.get("step"), "model": as_dict(config)},
        overwrite=overwrite,
    )


def _run_export(args: argparse.Namespace) -> int:
    out = export_hf(args.checkpoint, args.out, overwrite=args.overwrite)
    print(json.dumps({"exported": str(out), "files": sorted(p.name for p in out.iterdir())}))
    return 0


def add_commands(subparsers) -> None:
    """Register ``frontload export CKPT -o DIR``."""
    p = subparsers.add_parser("export", help="export a checkpoint to Hugging Face Llama format (transformers, vLLM)")
    p.add_argument("checkpoint", help="checkpoint folder (has meta.json)")
    p.add_argument("-o", "--out", required=True, help="output folder: new, empty, or a previous export (--overwrite)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace OUT when it holds a previous export (nothing else)"
    )
    p.set_defaults(func=_run_export)
