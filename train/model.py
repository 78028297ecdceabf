"""The frontload model: a Llama-style Megatron-core ``GPTModel`` built from our own :class:`ModelConfig`.

Llama-style means RoPE positions (non-interleaved), RMSNorm before attention and MLP, a SwiGLU MLP,
no biases anywhere, grouped-query attention when ``kv_heads < heads``, and untied or tied input and
output embeddings. Megatron-core's ``TransformerConfig`` is built inside :meth:`ModelConfig.build`;
Megatron-LM's argument parser is never used. On CPU the model uses the local layer spec (pure
PyTorch modules), on GPU Transformer Engine's spec when it is installed.

Invariants: the same config and seed build bitwise the same weights; ``ModelConfig`` round-trips
through :func:`frontload.core.config.as_dict` / :func:`model_config_from_dict` (checkpoints store
it that way); :func:`forward` always passes a bool causal mask ``[1, 1, s, s]`` (True = masked).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from frontload.core.config import ConfigError, from_mapping
from frontload.train import compat

# vLLM's CPU attention kernels are compiled for these head sizes only; export targets vLLM.
VLLM_CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256)


@dataclass(kw_only=True)
class ModelConfig:
    """Shape and numerics of a Llama-style decoder; ``build()`` returns a Megatron-core GPTModel."""

    layers: int = 2  # transformer blocks
    hidden: int = 64  # model width
    heads: int = 2  # query heads; head_dim = hidden / heads
    kv_heads: int | None = None  # key/value heads (grouped-query attention); None = heads
    ffn_hidden: int | None = None  # SwiGLU inner width; None = Llama's 8/3 * hidden rounded up to 64
    seq_len: int = 64  # training context length (also the RoPE table size)
    vocab_size: int = 512  # embedding rows; must match the tokenizer
    tied_embeddings: bool = False  # share the input embedding with the output layer
    rope_base: float = 10000.0  # RoPE theta
    norm_eps: float = 1e-5  # RMSNorm epsilon
    init_std: float = 0.02  # std of the normal init of weights
    tp: int = 1  # tensor-parallel size the model is split into (passed to Megatron-core)
    pp: int = 1  # pipeline-parallel size (passed to Megatron-core)
    bf16: bool = False  # bf16 parameters and compute (GPU); fp32 on CPU

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "seq_len", "vocab_size", "tp", "pp"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ConfigError("heads", f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.kv_heads is None:
            self.kv_heads = self.heads
        if self.kv_heads < 1 or self.heads % self.kv_heads:
            raise ConfigError("kv_heads", f"heads ({self.heads}) must be divisible by kv_heads ({self.kv_heads})")
        if self.ffn_hidden is None:
            self.ffn_hidden = 64 * -(-(8 * self.hidden // 3) // 64)
        if self.ffn_hidden < 1:
            raise ConfigError("ffn_hidden", f"must be >= 1, got {self.ffn_hidden}")
        if self.heads % self.tp or self.kv_heads % self.tp:
            raise ConfigError("tp", f"heads ({self.heads}) and kv_heads ({self.kv_heads}) must divide by tp")
        if self.layers % self.pp:
            raise ConfigError("pp", f"layers ({self.layers}) must be divisible by pp ({self.pp})")
        if self.norm_eps <= 0 or self.init_std <= 0 or self.rope_base <= 0:
            raise ConfigError("norm_eps", "norm_eps, init_std and rope_base must be positive")
        if self.head_dim not in VLLM_CPU_HEAD_DIMS:
            warnings.warn(
                f"head_dim {self.head_dim} (hidden/heads) is not one of {VLLM_CPU_HEAD_DIMS}: "
                "vLLM's CPU attention kernels will refuse the exported model",
                stacklevel=2,
            )

    @property
    def head_dim(self) -> int:
        """Per-head width, hidden / heads."""
        return self.hidden // self.heads

    def num_parameters(self) -> int:
        """Trainable parameters of the full (unsplit) model."""
        h, f, v = self.hidden, self.ffn_hidden, self.vocab_size
        kv = self.kv_heads * self.head_dim
        per_layer = h * (h + 2 * kv) + h * h + 2 * h * f + f * h + 2 * h
        return self.layers * per_layer + v * h * (1 if self.tied_embeddings else 2) + h

    def flops_per_token(self) -> int:
        """Training FLOPs per token (6N plus attention), for MFU."""
        return 6 * self.num_parameters() + 12 * self.layers * self.hidden * self.seq_len

    def transformer_config(self):
        """Megatron-core ``TransformerConfig`` for this model."""
        from megatron.core.transformer.transformer_config import TransformerConfig

        on_gpu = compat.cuda_available()
        return TransformerConfig(
            num_layers=self.layers,
            hidden_size=self.hidden,
            num_attention_heads=self.heads,
            num_query_groups=self.kv_heads,
            ffn_hidden_size=self.ffn_hidden,
            kv_channels=self.head_dim,
            normalization="RMSNorm",
            layernorm_epsilon=self.norm_eps,
            gated_linear_unit=True,
            activation_func=torch.nn.functional.silu,
            add_bias_linear=False,
            add_qkv_bias=False,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            init_method_std=self.init_std,
            tensor_model_parallel_size=self.tp,
            pipeline_model_parallel_size=self.pp,
            sequence_parallel=False,
            bf16=self.bf16,
            params_dtype=torch.bfloat16 if self.bf16 else torch.float32,
            pipeline_dtype=torch.bfloat16 if self.bf16 else torch.float32,
            # The fused kernels below need CUDA/apex; the unfused paths compute the same thing.
            bias_activation_fusion=False,
            bias_dropout_fusion=False,
            # Megatron's fused softmax kernels ship with Transformer Engine or apex, not with megatron-core.
            masked_softmax_fusion=on_gpu and has_transformer_engine(),
            persist_layer_norm=False,
            apply_rope_fusion=False,
            gradient_accumulation_fusion=False,
            use_cpu_initialization=not on_gpu,
            perform_initialization=True,
        )

    def build(self):
        """A Megatron-core ``GPTModel`` (needs :func:`frontload.train.runtime.init_distributed` first)."""
        from megatron.core import parallel_state
        from megatron.core.models.gpt import GPTModel
        from megatron.core.models.gpt.gpt_layer_specs import (
            get_gpt_layer_local_spec,
            get_gpt_layer_with_transformer_engine_spec,
        )

        compat.install()
        if compat.cuda_available() and has_transformer_engine():
            spec = get_gpt_layer_with_transformer_engine_spec()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Apex is not installed": expected on CPU
                spec = get_gpt_layer_local_spec(normalization="RMSNorm")
            if compat.cuda_available():
                # Megatron's local attention materialises the [s, s] score matrix per head; on a GPU
                # without Transformer Engine, PyTorch's fused SDPA kernels do the same math in O(s).
                spec.submodules.self_attention.submodules.core_attention = sdpa_attention_class()
        with compat.cuda_as_cpu():
            model = GPTModel(
                config=self.transformer_config(),
                transformer_layer_spec=spec,
                vocab_size=self.vocab_size,
                max_sequence_length=self.seq_len,
                pre_process=parallel_state.is_pipeline_first_stage(),
                post_process=parallel_state.is_pipeline_last_stage(),
                share_embeddings_and_output_weights=self.tied_embeddings,
                position_embedding_type="rope",
                rotary_base=int(self.rope_base),
            )
        return model.to(compat.device())


def has_transformer_engine() -> bool:
    """True when Transformer Engine imports (its layer spec is then used on GPUs)."""
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return False
    return True


def sdpa_attention_class():
    """Megatron's local ``DotProductAttention`` with training-time causal attention through PyTorch SDPA.

    Same inputs and outputs (``[s, b, heads, head_dim]`` in, ``[s, b, hidden]`` out); the causal
    square case (training, prefill) runs ``scaled_dot_product_attention(is_causal=True)`` (flash or
    memory-efficient kernels on a GPU), anything else (KV-cache decoding, other masks) falls back to
    Megatron's own path. Built lazily so importing this module does not import megatron.
    """
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType

    class SDPAttention(DotProductAttention):
        def forward(self, query, key, value, attention_mask, attn_mask_type=None, **kwargs):
            causal = (attn_mask_type or self.attn_mask_type) == AttnMaskType.causal
            plain = not kwargs.get("packed_seq_params") and kwargs.get("attention_bias") is None
            plain = plain and self.softmax_offset is None and not self.config.apply_query_key_layer_scaling
            dropout = self.attention_dropout.p if self.training else 0.0
            if not (causal and plain and query.shape[0] == key.shape[0] and dropout == 0.0):
                return super().forward(query, key, value, attention_mask, attn_mask_type, **kwargs)
            # [s, b, n, d] -> [b, n, s, d]
            q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
            out = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=self.softmax_scale, enable_gqa=k.shape[1] != q.shape[1]
            )
            s, b = query.shape[0], query.shape[1]
            return out.permute(2, 0, 1, 3).reshape(s, b, self.hidden_size_per_partition)

    return SDPAttention


def model_config_from_dict(d: dict[str, Any], where: str = "model") -> ModelConfig:
    """Rebuild a :class:`ModelConfig` from its JSON form (unknown keys are an error naming ``where``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return from_mapping(ModelConfig, d, where=where)


def unwrap(model):
    """The bare ``GPTModel`` inside DDP or Float16Module wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


def forward(
    model, tokens: torch.Tensor, position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits ``[b, s, vocab]`` (gathered over tensor parallel), or per-token loss ``[b, s]`` given labels."""
    if tokens.dim() == 1:
        tokens = tokens[None]
    s = tokens.shape[1]
    if position_ids is None:
        position_ids = torch.arange(s, device=tokens.device)[None].expand_as(tokens)
    mask = compat.causal_mask(s, tokens.device)
    if labels is not None:
        return model(tokens, position_ids, mask, labels=labels)
    return model(tokens, position_ids, mask, runtime_gather_output=True)


def replace(cfg: ModelConfig, **changes: Any) -> ModelConfig:
    """A copy of ``cfg`` with some fields changed (validated again)."""
    return dataclasses.replace(cfg, **changes)
