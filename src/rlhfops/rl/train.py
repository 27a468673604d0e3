"""The one entry to online policy optimisation: `policy.algorithm` picks our PPO (`rl/ppo.py`) or
TRL's GRPO / RLOO (`rl/trl_online.py`). The CLI (`rlhfops train-policy`), the cycle's `policy`
stage and the bench all call `train_policy`; the reward both sides optimise comes from
`reward/build.py`, and whether a process reward model is needed is decided there and in PPO
(`policy.dense_prm`), never by the caller.
"""

from __future__ import annotations

from pathlib import Path

from rlhfops.config import Config


def train_policy(
    cfg: Config,
    start_dir: str | Path,
    out_dir: str | Path,
    rm_dir: str | Path | None = None,
    prm_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Optimise the policy in `start_dir` with `policy.algorithm` on `policy.reward`; write it to `out_dir`.

    `rm_dir` holds the reward-model ensembles (used when `policy.reward` is `composite`), `prm_dir`
    the process reward model (used when `policy.dense_prm` or `reward.prm_weight > 0` asks for it;
    it may be absent otherwise)."""
    if cfg.policy.algorithm == "ppo":
        from rlhfops.rl.ppo import train_ppo

        return train_ppo(cfg, start_dir, out_dir, rm_dir, prm_dir, progress=progress)
    from rlhfops.rl.trl_online import train_trl_online

    return train_trl_online(cfg, start_dir, rm_dir, out_dir, progress=progress, prm_dir=prm_dir)
