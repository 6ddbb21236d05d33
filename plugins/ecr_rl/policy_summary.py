"""ECR-RL policy optimisation: the run's summary (first and final steps) and its curves plot."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np


def run_summary(records, c, log_path, curves_path, policy_dir, fingerprint, elapsed) -> dict:
    """What ``rl_finetune`` returns and ``done.json`` keeps: the means of the first and final steps."""
    k = min(5, len(records))

    def window(rs):
        keys = ("reward_mean", "reward_std", "reward_group_std", "kl", "loss", "completion_length",
                "distinct_completions")
        out = {key: _mean([r[key] for r in rs]) for key in keys}
        names = sorted({n for r in rs for n in r["components"]})
        out["components"] = {n: _mean([r["components"].get(n, {}).get("mean") for r in rs]) for n in names}
        return out

    secs = [r["seconds"] for r in records if r["seconds"] is not None]
    return {
        "algorithm": c["algorithm"], "steps": len(records), "log": str(log_path), "curves": str(curves_path),
        "policy_dir": str(policy_dir), "first": window(records[:k]), "final": window(records[-k:]),
        "seconds_per_step": float(np.median(secs)) if secs else None, "seconds": elapsed,
        "config": c, "fingerprint": fingerprint, "stopped": None,
    }


def _mean(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def plot_curves(records: list[dict], path: Path, algorithm: str) -> None:
    if not records:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    panels = [("reward (total)", "reward_mean"), ("KL to reference", "kl"), ("loss", "loss"),
              ("completion length (tokens)", "completion_length")]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), dpi=100)
    for ax, (title, key) in zip(axes.flat, panels):
        ys = [np.nan if r[key] is None else r[key] for r in records]
        ax.plot(steps, ys, marker="." if len(steps) < 50 else None, label=key)
        if key == "reward_mean":
            names = sorted({n for r in records for n in r["components"]})
            for n in names:
                ax.plot(steps, [r["components"].get(n, {}).get("mean", np.nan) for r in records],
                        alpha=0.6, lw=1, label=n)
            ax.legend(fontsize=7, loc="best")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"ECR-RL policy optimisation ({algorithm.upper()})", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
