"""frontload.corpus: document records, tokenizers, Megatron shard sets, manifests, and mix plans."""
