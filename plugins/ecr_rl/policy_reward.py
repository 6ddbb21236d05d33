"""ECR-RL policy optimisation: the reward function handed to TRL.

``RewardRecorder.func`` (named ``total``) calls the caller's ``reward_fn(prompts,
completions) -> (total, components)`` on the original prompts and keeps the last step's
statistics (mean, std, within-prompt std of the total and of each component) for the log.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from crsbench.errors import DegenerateRunError


class RewardRecorder:
    """The TRL reward function (``total``) around ``reward_fn``; keeps the last step's stats."""

    def __init__(self, reward_fn: Callable, originals: Sequence[str]):
        self.reward_fn = reward_fn
        self.originals = list(originals)
        self.last: dict | None = None
        self.calls = 0

        def total(prompts, completions, completion_ids=None, rl_index=None, log_metric=None, **kwargs):
            return self._score(prompts, completions, completion_ids, rl_index, log_metric)

        self.func = total

    def _score(self, prompts, completions, completion_ids, rl_index, log_metric) -> list[float]:
        n = len(completions)
        if rl_index is None:                      # TRL passes dataset columns as kwargs
            raise RuntimeError("rl: TRL did not pass the 'rl_index' column to the reward function")
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        originals = [self.originals[int(i)] for i in rl_index]
        out = self.reward_fn(originals, texts)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("rl: reward_fn must return (total, components)")
        total = np.asarray(out[0], dtype=float).reshape(-1)
        comps = {str(k): np.asarray(v, dtype=float).reshape(-1) for k, v in (out[1] or {}).items()}
        if len(total) != n or any(len(v) != n for v in comps.values()):
            raise ValueError(f"rl: reward_fn returned {len(total)} totals / "
                             f"{ {k: len(v) for k, v in comps.items()} } component values for {n} completions")
        bad = int((~np.isfinite(total)).sum())
        if bad:
            raise DegenerateRunError(f"reward_fn returned {bad} non-finite totals of {n} — fix the reward "
                                     f"before training on it")
        groups: dict[int, list[float]] = {}
        for i, r in zip(rl_index, total):
            groups.setdefault(int(i), []).append(float(r))
        group_std = float(np.mean([np.std(g) for g in groups.values()]))
        group_of = np.array([int(i) for i in rl_index])

        def within(values):  # mean over prompts of the std among that prompt's completions
            return float(np.mean([np.nanstd(values[group_of == g]) for g in np.unique(group_of)]))

        lengths = [len(ids) for ids in completion_ids] if completion_ids is not None else None
        self.calls += 1
        self.last = {
            "reward_mean": float(total.mean()), "reward_std": float(total.std()),
            "reward_group_std": group_std,
            "components": {k: {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v)), "group_std": within(v)}
                           for k, v in comps.items()},
            "distinct_completions": len(set(texts)), "n_completions": n,
            "completion_length_ids": float(np.mean(lengths)) if lengths else None,
            "example": texts[0],
        }
        if log_metric is not None:                # also visible in TRL's own logs
            log_metric("reward_group_std", group_std)
            log_metric("completions/distinct", float(len(set(texts))))
            for k, v in self.last["components"].items():
                log_metric(f"rewards/{k}/mean", v["mean"])
                log_metric(f"rewards/{k}/std", v["std"])
                log_metric(f"rewards/{k}/group_std", v["group_std"])
        return total.tolist()
