"""ECR-RL's reward bookkeeping per RL step: each component's within-group spread, and the total
without the components that cannot rank the completions of one prompt."""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("crsbench")

CONSTANT_WITHIN_GROUPS = 1e-9  # a component whose within-group std stays below this carries no signal


class ComponentVariance:
    """Per RL step: each reward component's within-group std (groups = completions of one
    prompt). The step's total leaves out components constant within every group (they shift
    a group's rewards together, so they cannot rank siblings), warning once per component."""

    def __init__(self, weights: dict[str, float]):
        self.weights = dict(weights)
        self.steps: list[dict] = []
        self.warned: set[str] = set()

    def total(self, prompts, components: dict[str, np.ndarray]) -> np.ndarray:
        index: dict[str, int] = {}
        keys = np.array([index.setdefault(p, len(index)) for p in prompts])
        step = {}
        total = np.zeros(len(prompts))
        for name, values in components.items():
            values = np.asarray(values, float)
            within = float(np.mean([values[keys == k].std() for k in np.unique(keys)]))
            between = float(values.std())
            constant = within < CONSTANT_WITHIN_GROUPS
            step[name] = {"within_group_std": within, "batch_std": between, "used": not constant}
            if constant:
                if name not in self.warned:
                    self.warned.add(name)
                    log.warning("rl: reward component %r is constant within every group (batch std %.3g); "
                                "it is left out of the total while it stays so", name, between)
            else:
                total += self.weights[name] * values
        # each component's share of the weighted within-group spread: what can rank siblings
        spread = {n: abs(self.weights[n]) * v["within_group_std"] for n, v in step.items() if v["used"]}
        for n, v in step.items():
            v["share"] = spread[n] / sum(spread.values()) if n in spread and sum(spread.values()) > 0 else 0.0
        self.steps.append(step)
        return total

    def report(self) -> dict:
        names = sorted({n for s in self.steps for n in s})
        return {n: {"within_group_std_mean": float(np.mean([s[n]["within_group_std"] for s in self.steps if n in s])),
                    "batch_std_mean": float(np.mean([s[n]["batch_std"] for s in self.steps if n in s])),
                    "steps_constant_within_groups": int(sum(not s[n]["used"] for s in self.steps if n in s)),
                    "share_of_within_group_spread": float(np.mean([s[n]["share"] for s in self.steps if n in s])),
                    "steps": int(sum(n in s for s in self.steps)), "weight": self.weights.get(n)}
                for n in names}
