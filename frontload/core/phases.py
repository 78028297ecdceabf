"""The training phases, in the order of the checkpoint chain (each starts from the one before)."""

PHASES: tuple[str, ...] = ("pretrain", "sft", "rl")
