"""An example crsbench plugin: one model, one metric and one reward.

crsbench imports this module when it loads the ``example`` entry point, so keep the
top level light: numpy is fine, torch/transformers/datasets belong inside methods.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from crsbench import MeanMetric, Model, Reward, hookimpl


class CooccurrenceModel(Model):
    """Scores an item by how often it shared a training dialogue with the context items."""

    name = "example-cooccurrence"
    version = "0.1.0"
    description = "Items that co-occur with the context items in training dialogues, then popularity."
    profiles = {
        "default": {"max_context": 5, "top_k": 200},
        "wide": {"max_context": 20, "top_k": 1000},
    }

    def fit(self, data) -> None:
        items_by_dialog = defaultdict(set)
        popularity = Counter()
        for sample in data.splits["train"]:
            items_by_dialog[sample["dialog_id"]].update(sample["context_items"], sample["targets"])
            popularity.update(sample["targets"])
        self.cooccur = defaultdict(Counter)
        for items in items_by_dialog.values():
            for a in items:
                self.cooccur[a].update(b for b in items if b != a)
        self.catalogue = np.array(sorted(data.items))
        self.index = {int(item): i for i, item in enumerate(self.catalogue)}
        counts = np.array([popularity[int(item)] for item in self.catalogue], dtype=float)
        # Co-occurrence counts are integers; popularity scaled below 1 only breaks their ties.
        self.prior = counts / (counts.max() + 1.0)
        self.context.logger.info("example-cooccurrence: %d training dialogues", len(items_by_dialog))

    def recommend(self, batch: list[dict]) -> list[list[int]]:
        rankings = []
        for sample in batch:
            scores = self.prior.copy()
            recent = list(dict.fromkeys(reversed(sample["context_items"])))[: self.config["max_context"]]
            for item in recent:
                for other, count in self.cooccur.get(item, {}).items():
                    if other in self.index:
                        scores[self.index[other]] += count
            best = np.argsort(-scores, kind="stable")[: self.config["top_k"]]
            rankings.append(self.catalogue[best].tolist())  # a partial ranking is fine
        return rankings


class CoverageMetric(MeanMetric):
    """1 if the target is ranked in the top 100, else 0; the mean over targets."""

    name = "example_coverage"
    kind = "recommendation"
    description = "Share of target items ranked in the top 100 (example plugin)."

    def values(self, units):
        rank = np.asarray(units["rank"], dtype=float)
        return (rank <= 100).astype(float), np.ones(len(rank), dtype=bool)


class MentionReward(Reward):
    """1.0 for a response that mentions an item (the ``<movie>`` placeholder), else 0.0."""

    name = "example-mention"
    description = "1 if the response mentions an item placeholder, else 0 (example plugin)."

    def score(self, samples: list[dict], responses: list[str]) -> list[float]:
        placeholder = self.options.get("placeholder", "<movie>")
        return [float(placeholder in response) for response in responses]


@hookimpl
def register_models(register):
    register(CooccurrenceModel)


@hookimpl
def register_metrics(register):
    register(CoverageMetric())


@hookimpl
def register_rewards(register):
    register(MentionReward)
