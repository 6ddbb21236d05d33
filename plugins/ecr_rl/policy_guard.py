"""ECR-RL policy optimisation: the per-step log and the guards that stop a degenerate run.

``RLGuard`` (a transformers ``TrainerCallback``) writes one JSON line per optimizer step and
stops training on a flat reward, a KL above ``max_kl``, a non-finite loss or KL, or a
collapsed policy (see policy.py).
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from crsbench_plugins.ecr_rl.policy_reward import RewardRecorder

log = logging.getLogger("crsbench")


def _callback_base():
    from transformers import TrainerCallback
    return TrainerCallback


class RLGuard(_callback_base()):
    """Writes one log line per step and stops degenerate runs (``control.should_training_stop``).

    ``reason`` is None, or the message naming the numbers that tripped a guard.
    """

    def __init__(self, recorder: RewardRecorder, cfg: dict, log_path: Path):
        self.recorder, self.cfg, self.log_path = recorder, cfg, Path(log_path)
        self.records: list[dict] = []
        self.reason: str | None = None
        self._flat = 0
        self._collapsed = 0
        self._t0: float | None = None
        self._seconds: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is not None:
            self._seconds = time.perf_counter() - self._t0

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "reward" not in logs or "train_runtime" in logs:   # the end-of-training summary
            return control
        rec = self.recorder.last or {}
        length = logs.get("completions/mean_length", rec.get("completion_length_ids"))
        record = {
            "step": int(state.global_step),
            "reward_mean": rec.get("reward_mean", logs.get("reward")),
            "reward_std": rec.get("reward_std", logs.get("reward_std")),
            "reward_group_std": rec.get("reward_group_std"),
            "components": rec.get("components", {}),
            "kl": _num(logs.get("kl")),
            "loss": _num(logs.get("loss")),
            "completion_length": _num(length),
            "distinct_completions": rec.get("distinct_completions"),
            "n_completions": rec.get("n_completions"),
            "entropy": _num(logs.get("entropy")),
            "grad_norm": _num(logs.get("grad_norm")),
            "learning_rate": _num(logs.get("learning_rate")),
            "seconds": self._seconds,
            "example": rec.get("example"),
        }
        self.records.append(record)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        reason = self.check(record)
        if reason and self.reason is None:
            self.reason = reason
            log.warning("rl: stopping at step %d: %s", record["step"], reason)
            control.should_training_stop = True
        return control

    def check(self, r: dict) -> str | None:
        c, step = self.cfg, r["step"]
        for key in ("loss", "kl"):
            v = r[key]
            if v is not None and not math.isfinite(v):
                return f"{key} is {v} at step {step} — training diverged"
        if c["max_kl"] is not None and r["kl"] is not None and r["kl"] > float(c["max_kl"]):
            return (f"KL to the reference {r['kl']:.4g} > max_kl {float(c['max_kl']):.4g} at step {step} "
                    f"— the policy drifted too far from the ECR generator (lower lr or raise beta)")
        std = r["reward_group_std"] if r["reward_group_std"] is not None else r["reward_std"]
        self._flat = self._flat + 1 if std is not None and std < c["min_reward_std"] else 0
        if self._flat >= c["patience"]:
            return (f"reward std < {c['min_reward_std']:.0e} for {self._flat} consecutive steps "
                    f"(last: within-prompt std {std:.4f}, batch std {r['reward_std']:.4f}, "
                    f"mean {r['reward_mean']:.4f}) — the reward cannot rank the samples")
        self._collapsed = self._collapsed + 1 if r["distinct_completions"] == 1 else 0
        if self._collapsed >= c["collapse_patience"]:
            return (f"all {r['n_completions']} completions identical for {self._collapsed} consecutive steps "
                    f"(last: {r['example']!r}) — the policy collapsed")
        return None


def _num(v):
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
