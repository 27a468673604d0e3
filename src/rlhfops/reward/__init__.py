"""Reward side: reward-model ensembles, objectives, process reward model, shaping."""
