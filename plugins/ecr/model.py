"""The ECR pipeline as a crsbench model: every stage trained in ``fit``, in this order.

0. emotion labels for seeker utterances (annotator -> classifier), text embeddings (cached)
1. emotional semantic fusion: RGCN + emotions + text, pre-trained on response entities
2. conversation templates: a generator writes the reply with ``<movie>`` slots
3. emotion-aware item recommendation: prompt (+ template) -> scores over the catalogue
4. emotion-aligned response generation: knowledge prompt -> description of the movie
Each stage has its own directory under ``checkpoints/`` and is skipped when done.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from crsbench.model import Model
from crsbench_plugins.ecr.config import ECR_PROFILES, switches, unicrs_profiles

log = logging.getLogger("crsbench")
PLACEHOLDER = "<movie>"


class ECRModel(Model):
    name = "ecr"
    version = "1.0"
    description = "ECR (Zhang et al., RecSys 2024): emotion-aware CRS, full training pipeline"
    generates = True
    profiles = ECR_PROFILES

    @classmethod
    def default_profile(cls, device: str = "cpu") -> str:
        return "paper" if device.startswith("cuda") else "cpu"

    # -- training ---------------------------------------------------------------------------
    def fit(self, data) -> None:
        from crsbench_plugins.ecr import pipeline

        started = time.perf_counter()
        self.switches = switches(self.config)
        self.state = pipeline.train_all(self.config, self.switches, data, self.context)
        self.state.timings["fit_total"] = time.perf_counter() - started

    def recommend(self, batch: list[dict]) -> list[list[int]]:
        from crsbench_plugins.ecr import pipeline

        return pipeline.rank_items(self.state, batch)

    def generate(self, batch: list[dict]) -> list[str]:
        from crsbench_plugins.ecr import pipeline

        return pipeline.respond(self.state, batch)

    def result_extra(self) -> dict:
        return {"stages": self.state.summaries, "stage_seconds": {k: round(v, 2) for k, v in self.state.timings.items()},
                "stage_peak_rss_mb": dict(self.state.peak_rss_mb), "switches": self.switches}


class UniCRSModel(ECRModel):
    name = "unicrs"
    description = "UniCRS (Wang et al., KDD 2022): the ECR pipeline with every emotion component off"
    profiles = unicrs_profiles()
