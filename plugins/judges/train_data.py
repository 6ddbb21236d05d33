"""What the learned judges' training commands share (``train_learned.py``): the labelled
CRSArena-Eval turns, their features, the encoder's id, and the validation record of a
judge's predictions.
"""
from __future__ import annotations

import sys

import numpy as np

from crsbench_plugins.judges.learned import RUBRIC


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- data -------------------------------------------------------------------------------------
def turn_units(data_path=None):
    """The benchmark and its labelled turns (``crsarena.load_units``: the bundled ReDial half)."""
    from crsbench.judge_validation import get_benchmark

    benchmark = get_benchmark("crsarena-eval")
    data = benchmark.load(data_path)
    return benchmark, data, list(data.units["turn"])


def unit_features(units, encoder=None, cache: bool = True) -> np.ndarray:
    from crsbench_plugins.ecr.text_encoder import get_encoder
    from crsbench_plugins.judges.learned_features import featurize, split_pair

    pairs = [split_pair(u.item.context, u.item.response, u.item.roles) for u in units]
    return featurize(pairs, encoder or get_encoder(), cache=cache)


def encoder_id(encoder=None) -> str:
    from crsbench_plugins.ecr.text_encoder import get_encoder

    return (encoder or get_encoder()).model_id


# -- records ----------------------------------------------------------------------------------
def make_validation_record(judge, benchmark, data, units, predictions: dict, split: str, extra: dict,
                           n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """A validation record (A's schema) of ``predictions`` (unit key -> {aspect: score})."""
    from crsbench.judge_validation import aspect_stats, make_record, published_agreement, scoring_order

    aspects = [a for a in benchmark.aspects["turn"] if a in judge.metrics]
    half = units[0].half
    units = scoring_order(units)  # the unit order `crsbench judge validate` uses: the same bootstrap draws
    judged, trivial = aspect_stats(units, predictions, aspects, "turn", n_bootstrap, seed)
    return make_record(benchmark=benchmark, data=data, half=half, judge=judge.describe(), judge_id=judge.judge_id,
                       rubric=RUBRIC, levels=["turn"], aspects=judged, trivial=trivial, split=split,
                       n_bootstrap=n_bootstrap, seed=seed, published=published_agreement(benchmark, half, aspects),
                       extra=extra)

