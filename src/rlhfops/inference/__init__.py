"""Inference-time techniques: Best-of-N sampling (fixed and adaptive N) and its on-disk cache."""
