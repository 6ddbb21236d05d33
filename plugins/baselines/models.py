"""Three non-learning recommenders that bound what a real model should beat.

`repeat-context` is the shortcut that inflates published ReDial numbers: it re-lists the
movies already mentioned in the dialogue. The `dedup` protocol exists to expose it.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from crsbench.model import Model


class RandomModel(Model):
    name = "random"
    version = "1.0"
    description = "Uniformly random ranking of the catalogue (seeded)."
    resumable_predictions = False  # one generator draws every batch's permutations in turn

    def fit(self, data) -> None:
        self.items = np.array(sorted(data.items))
        self.rng = np.random.default_rng(self.context.seed)

    def recommend(self, batch):
        return [self.rng.permutation(self.items).tolist() for _ in batch]


class PopularityModel(Model):
    name = "popularity"
    version = "1.0"
    description = "Catalogue ranked by how often the training split recommends each item."

    def fit(self, data) -> None:
        counts = Counter()
        for sample in data.splits["train"]:
            counts.update(sample["targets"])
        # Most recommended first; ties broken by item id so the ranking is deterministic.
        self.ranking = sorted(data.items, key=lambda item: (-counts[item], item))
        self.context.logger.info("popularity: %d of %d items recommended in train", len(counts), len(data.items))

    def recommend(self, batch):
        return [self.ranking for _ in batch]


class RepeatContextModel(PopularityModel):
    name = "repeat-context"
    version = "1.0"
    description = "Items already mentioned in the dialogue, most recent first, then popularity."

    def recommend(self, batch):
        out = []
        for sample in batch:
            recent = list(dict.fromkeys(reversed(sample["context_items"])))
            seen = set(recent)
            out.append(recent + [item for item in self.ranking if item not in seen])
        return out
