"""frontload.corpus: one stage, text → tokenizer → Megatron shard sets → mix plans."""
