"""frontload.filters: datatrove steps that verify, score, deduplicate and decontaminate traces."""
