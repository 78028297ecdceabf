"""frontload.train: the Megatron-core model and the pretraining, SFT and RL phases."""
