"""A weighted sum of registered rewards, keeping each component for logging.

    reward = CombinedReward({"bleu": 0.5, "rec_hit": 1.0,
                             "length": {"weight": 0.2, "min_len": 8, "max_len": 40}},
                            options={"rec_hit": {"item_names": names}})
    total, components = reward.score_components(samples, responses)
    log.info(reward.summary(total, components))  # {"reward/total": ..., "reward/bleu": ...}

Each config value is a weight, or a dict with a ``weight`` and that reward's options.
Options given both ways are merged (the ``options`` argument wins). Names are looked up in
the reward registry (``register_rewards`` hook), so third-party rewards combine the same way.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Mapping

import numpy as np

from crsbench.errors import UserError
from crsbench.reward import Reward


def _reward_classes(registry) -> dict[str, type]:
    if registry is None:
        from crsbench.plugins import get_registry

        registry = get_registry()
    if isinstance(registry, Mapping):  # {name: class} given directly
        return dict(registry)
    return {name: entry.obj for name, entry in registry.rewards().items()}


class CombinedReward(Reward):
    """``total = sum_k weight_k * reward_k(samples, responses)`` over the configured rewards.

    ``score`` returns the totals; ``score_components`` returns ``(total, {name: raw scores})``
    as float arrays, the components unweighted so each can be logged on its own scale.
    """

    name = "combined"
    description = "Weighted sum of other rewards; config {name: weight or {weight, **options}}."

    def __init__(self, config: Mapping[str, Any] | None = None, *, options: Mapping[str, dict] | None = None,
                 registry=None, **extra):
        super().__init__(config=config, options=options, **extra)
        if extra:
            raise UserError(f"CombinedReward: unknown argument(s) {', '.join(sorted(extra))}")
        if not config:
            raise UserError("CombinedReward needs a config {reward name: weight}, got an empty one")
        options = dict(options or {})
        classes = _reward_classes(registry)
        unknown = [n for n in config if n not in classes]
        unknown += [n for n in options if n not in config and n not in unknown]
        if unknown:
            hints = []
            for n in unknown:
                close = difflib.get_close_matches(n, classes, n=1)
                hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            known = ", ".join(sorted(classes)) or "none"
            raise UserError(f"unknown reward(s) {', '.join(hints)} in the combined reward config "
                            f"(known: {known}; see 'crsbench list rewards')")

        if registry is None or not isinstance(registry, Mapping):  # record which rewards the run used
            from crsbench.plugins import get_registry

            for name in config:
                (registry or get_registry()).use("rewards", name)
        self.weights: dict[str, float] = {}
        self.rewards: dict[str, Reward] = {}
        for name, value in config.items():
            own = {}
            if isinstance(value, Mapping):
                own = dict(value)
                if "weight" not in own:
                    raise UserError(f"combined reward config for {name!r}: a dict needs a 'weight' key")
                value = own.pop("weight")
            try:
                weight = float(value)
            except (TypeError, ValueError):
                raise UserError(f"combined reward config: weight of {name!r} must be a number, "
                                f"got {value!r}") from None
            if not math.isfinite(weight):
                raise UserError(f"combined reward config: weight of {name!r} is {weight}")
            own.update(options.get(name) or {})
            self.weights[name] = weight
            self.rewards[name] = classes[name](**own)

    def score_components(self, samples, responses) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if len(samples) != len(responses):
            raise ValueError(f"combined reward: {len(samples)} samples but {len(responses)} responses")
        components: dict[str, np.ndarray] = {}
        total = np.zeros(len(responses))
        for name, reward in self.rewards.items():
            values = np.asarray(reward.score(samples, responses), dtype=float).reshape(-1)
            if values.shape[0] != len(responses):
                raise ValueError(f"reward {name!r} returned {values.shape[0]} scores for {len(responses)} responses")
            if not np.all(np.isfinite(values)):
                raise ValueError(f"reward {name!r} returned non-finite scores: {values[~np.isfinite(values)][:5]}")
            components[name] = values
            total += self.weights[name] * values
        return total, components

    def score(self, samples, responses) -> list[float]:
        total, _ = self.score_components(samples, responses)
        return [float(v) for v in total]

    @staticmethod
    def summary(total, components: Mapping[str, np.ndarray], prefix: str = "reward/") -> dict[str, float]:
        """Mean of the total and of each component, for a training log line."""
        out = {f"{prefix}total": float(np.mean(total)) if len(total) else float("nan")}
        for name, values in components.items():
            out[f"{prefix}{name}"] = float(np.mean(values)) if len(values) else float("nan")
        return out
