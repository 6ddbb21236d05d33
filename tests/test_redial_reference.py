"""Agreement of the redial test split with UniCRS's preprocessed ReDial test split.

``data/unicrs_test_processed.jsonl.gz`` (ShupeiLi/UniCRS @ 2bb38d7, MIT) holds one line per
recommender turn of the official test split, in the same order as our samples:
``{context, resp, rec, entity}``. A target is reproduced when it is in the sample's ``rec``
(as multisets, sample by sample).
"""
from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from crsbench_tasks.redial.kg import DATA_DIR
from crsbench_tasks.redial.task import RedialTask

N_SAMPLES = 7978
N_REFERENCE_TARGETS = 4810
MIN_AGREEMENT = 0.99


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRSBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("redial-cache")))
        return RedialTask().load().splits["test"].to_list()


@pytest.fixture(scope="module")
def reference():
    with gzip.open(DATA_DIR / "unicrs_test_processed.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_sample_counts_match(samples, reference):
    assert len(reference) == N_SAMPLES
    assert len(samples) == len(reference)
    # samples with targets: 3,552 in the reference; ours differ only where a movie maps differently
    assert sum(1 for r in reference if r["rec"]) == 3552
    assert abs(sum(1 for s in samples if s["targets"]) - 3552) <= 10
    assert len({s["sample_id"] for s in samples}) == len(samples)


def test_reference_targets_are_reproduced(samples, reference):
    total = sum(len(r["rec"]) for r in reference)
    assert total == N_REFERENCE_TARGETS
    reproduced = sum(sum((Counter(s["targets"]) & Counter(r["rec"])).values())
                     for s, r in zip(samples, reference))
    ours = sum(len(s["targets"]) for s in samples)
    print(f"\nreference agreement: {reproduced}/{total} UniCRS test targets reproduced "
          f"({reproduced / total:.2%}); {ours} targets in our samples")
    assert reproduced / total >= MIN_AGREEMENT


def test_contexts_and_templates_match(samples, reference):
    """Same turns, same text. UniCRS starts the context of a dialogue the recommender opens
    with an empty turn (so its first sample has context ``[""]``)."""
    opened = {s["dialog_id"] for s in samples if s["turn"] == 0}
    assert len(opened) == 891
    for s, r in zip(samples, reference):
        expected = [""] + s["context"] if s["dialog_id"] in opened else s["context"]
        assert r["context"] == expected, s["sample_id"]
        assert s["response_template"] == r["resp"], s["sample_id"]
