"""KFP components: one per stage of the cycle, each a typed wrapper of a few lines around `rlhfops.cycle`."""
