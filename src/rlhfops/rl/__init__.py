"""Policy optimisation: PPO, TRL GRPO/RLOO, offline RL."""
