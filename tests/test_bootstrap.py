"""Dialogue bootstrap, and scoring / comparing prediction records end to end."""
import copy
import math
import random

import numpy as np
import pytest

from crsbench.bootstrap import draw_dialog_counts, paired_p_value, percentile_ci, replicate_scores
from crsbench.evaluation import compare_records, score_records
from crsbench.metrics import generation, recommendation
from crsbench.metrics.base import RECOMMENDATION, Units
from crsbench.predictions import _base_record


def all_metrics():
    return {m.name: m for m in recommendation.all_metrics() + generation.all_metrics()}


# -- draws -------------------------------------------------------------------------------
@pytest.mark.parametrize("n_dialogs", [1, 7, 250])
def test_draw_rows_sum_to_n_dialogs(n_dialogs):
    counts = draw_dialog_counts(n_dialogs, 200, seed=1)
    assert counts.shape == (200, n_dialogs)
    assert np.all(counts.sum(axis=1) == n_dialogs)
    assert np.all(counts >= 0) and np.all(counts == np.round(counts))


def test_draws_are_seed_deterministic():
    a = draw_dialog_counts(50, 100, seed=7)
    assert np.array_equal(a, draw_dialog_counts(50, 100, seed=7))
    assert not np.array_equal(a, draw_dialog_counts(50, 100, seed=8))


def test_no_dialogs():
    assert draw_dialog_counts(0, 10, seed=0).shape == (10, 0)


# -- CIs and p-values on real metrics ----------------------------------------------------
def _rank_units(ranks, dialogs, feedback=None):
    feedback = feedback if feedback is not None else ["liked"] * len(ranks)
    return Units(RECOMMENDATION, np.asarray(dialogs), {"rank": np.asarray(ranks, dtype=float),
                                                        "feedback": feedback})


def test_percentile_ci_contains_the_point_estimate():
    rng = np.random.default_rng(0)
    n_dialogs = 300
    dialogs = np.sort(rng.integers(0, n_dialogs, 1000))  # several targets per dialogue
    ranks = rng.integers(1, 100, 1000).astype(float)
    feedback = list(rng.choice(["liked", "disliked"], 1000))
    u = _rank_units(ranks, dialogs, feedback)
    counts = draw_dialog_counts(n_dialogs, 500, seed=0)
    for name in ("recall@10", "ndcg@50", "rt@10", "auc"):
        m = all_metrics()[name]
        prepared = m.prepare(u)
        point = m.score(prepared, np.ones(len(u)))
        reps = replicate_scores(m, prepared, u.dialog, counts)
        assert reps.shape == (500,)
        lo, hi = percentile_ci(reps)
        assert lo < point < hi, name
        assert hi - lo < 0.2, name


def test_percentile_ci_ignores_nan_and_all_nan_gives_nan():
    lo, hi = percentile_ci(np.array([np.nan, 1.0, 1.0]))
    assert lo == hi == 1.0
    assert all(math.isnan(x) for x in percentile_ci(np.array([np.nan, np.nan])))


def test_paired_p_value():
    rng = np.random.default_rng(1)
    n_dialogs = 200
    dialogs = np.arange(n_dialogs)
    counts = draw_dialog_counts(n_dialogs, 1000, seed=3)
    m = all_metrics()["recall@10"]
    ranks_a = rng.integers(1, 40, n_dialogs).astype(float)  # recall@10 about 1/4
    pa = m.prepare(_rank_units(ranks_a, dialogs))
    reps_a = replicate_scores(m, pa, dialogs, counts)
    # identical runs: every difference is 0 -> p = 1
    assert paired_p_value(reps_a - replicate_scores(m, pa, dialogs, counts)) == 1.0
    # a clearly better run B (every target at rank 1): recall@10 = 1 vs ~1/4 -> p tiny
    pb = m.prepare(_rank_units(np.ones(n_dialogs), dialogs))
    assert paired_p_value(replicate_scores(m, pb, dialogs, counts) - reps_a) < 0.01
    # a symmetric difference around 0 -> large p
    assert paired_p_value(np.array([-2.0, -1.0, 1.0, 2.0])) == 1.0
    assert math.isnan(paired_p_value(np.array([np.nan])))


# -- score_records / compare_records on hand-built prediction records ---------------------
def _record(sample_id, dialog_id, targets, context=(), context_ranks=(), response=None, reference="",
            hyp_items=0):
    """A prediction record as `predict` writes it; ``targets`` = [(item, feedback, rank|None)]."""
    sample = {"sample_id": sample_id, "dialog_id": dialog_id, "context_items": list(context),
              "targets": [t[0] for t in targets], "target_feedback": [t[1] for t in targets],
              "response": reference}
    record = _base_record(sample)
    for t, (_, _, rank) in zip(record["targets"], targets):
        t["rank"] = rank
    record["context_item_ranks"] = list(context_ranks)
    record["response"] = response
    record["hyp_items"] = hyp_items
    return record


def _records():
    return [
        # d1: target 10 at rank 1
        _record("s1", "d1", [(10, "liked", 1)], response="i like it", reference="i like it a lot"),
        # d1: context item 5 (ranked 1st) is also a target; target 7 at rank 3.
        #   standard: ranks 3 and 1; dedup: 5 is not evaluated, 7 moves up to rank 2
        _record("s2", "d1", [(7, "liked", 3), (5, "disliked", 1)], context=[5], context_ranks=[1],
                response="<movie> is a great movie", reference="have you seen <movie> ?", hyp_items=1),
        # d2: target 8 unranked
        _record("s3", "d2", [(8, "liked", None)], response="", reference="hello"),
        # d3: target 9 at rank 20; no response generated for this sample
        _record("s4", "d3", [(9, "disliked", 20)]),
        # d3: a sample without targets
        _record("s5", "d3", [], response="ok", reference="ok"),
    ]


def test_score_records_hand_values():
    out = score_records(_records(), all_metrics(), ["standard", "dedup"], n_boot=200, seed=0)
    # standard ranks: 1, 3, 1, inf, 20 (feedback L, L, D, L, D)
    assert out["standard/recall@1"]["value"] == pytest.approx(2 / 5)
    assert out["standard/recall@10"]["value"] == pytest.approx(3 / 5)
    assert out["standard/recall@50"]["value"] == pytest.approx(4 / 5)
    assert out["standard/recall@1"]["n"] == 5
    # rt@1: liked ranks 1, 3, inf -> 1/3
    assert out["standard/rt@1"]["value"] == pytest.approx(1 / 3)
    # auc: liked {1, 3, inf} vs disliked {1, 20}: (tie + win) + (loss + win) + (loss + loss) = 2.5/6
    assert out["standard/auc"]["value"] == pytest.approx(2.5 / 6)
    # dedup ranks: 1, 2, inf, 20 (target 5 dropped, 7 moved up past context item 5)
    assert out["dedup/recall@1"]["n"] == 4
    assert out["dedup/recall@1"]["value"] == pytest.approx(1 / 4)
    assert out["dedup/mrr@10"]["value"] == pytest.approx((1 + 1 / 2) / 4)
    # auc under dedup: liked {1, 2, inf} vs disliked {20}: win, win, loss -> 2/3
    assert out["dedup/auc"]["value"] == pytest.approx(2 / 3)
    # generation: responses of s1, s2, s3, s5 (s4 has none)
    assert out["generation/item_ratio"]["n"] == 4
    assert out["generation/item_ratio"]["value"] == pytest.approx(1 / 4)
    assert out["generation/mean_length"]["value"] == pytest.approx((3 + 5 + 0 + 1) / 4)
    for key, row in out.items():
        assert set(row) == {"value", "ci_low", "ci_high", "n"}
        if row["value"] is not None and row["ci_low"] is not None:
            assert row["ci_low"] - 1e-9 <= row["ci_high"], key
    # generation metrics never appear under a protocol and vice versa
    assert "standard/bleu-1" not in out and "generation/recall@10" not in out
    # same seed, same result
    assert score_records(_records(), all_metrics(), ["standard", "dedup"], n_boot=200, seed=0) == out


def test_score_records_without_bootstrap_and_nan_as_none():
    records = [_record("s1", "d1", [(1, "liked", 2)])]
    out = score_records(records, all_metrics(), ["standard"], n_boot=0)
    assert out["standard/recall@10"] == {"value": 1.0, "ci_low": None, "ci_high": None, "n": 1}
    assert out["standard/auc"]["value"] is None  # one class only -> NaN -> None
    assert not any(k.startswith("generation/") for k in out)


def _many_records(n_dialogs, rank, seed):
    rng = random.Random(seed)
    return [_record(f"s{i}", f"d{i // 2}", [(i, "liked", rank if rank else rng.randint(1, 60))],
                    response="i like <movie>" if i % 2 else "hello there", reference="i like <movie> too")
            for i in range(2 * n_dialogs)]


def test_compare_records_identical_runs():
    a = _many_records(30, None, seed=0)
    out = compare_records(a, copy.deepcopy(a), all_metrics(), ["standard"], n_boot=300)
    row = out["standard/recall@10"]
    assert row["delta"] == 0.0 and row["p_value"] == 1.0 and row["a"] == row["b"]
    assert out["generation/bleu-1"]["p_value"] == 1.0


def test_compare_records_clearly_different_runs():
    a = _many_records(40, None, seed=0)
    b = _many_records(40, 1, seed=0)  # every target at rank 1
    random.Random(5).shuffle(b)  # records are matched by sample_id, not by position
    out = compare_records(a, b, all_metrics(), ["standard"], n_boot=300)
    row = out["standard/recall@10"]
    assert row["b"] == 1.0 and row["a"] < 0.5
    assert row["delta"] == pytest.approx(row["b"] - row["a"])
    assert row["ci_low"] > 0 and row["p_value"] < 0.01
    assert row["n"] == 80


def test_compare_records_needs_shared_samples():
    a = [_record("s1", "d1", [(1, "liked", 1)])]
    b = [_record("other", "d1", [(1, "liked", 1)])]
    with pytest.raises(ValueError):
        compare_records(a, b, all_metrics(), ["standard"], n_boot=10)


def test_p_value_display_names_the_resolution():
    from crsbench.tables import fmt_p

    assert fmt_p(0.0, 1000) == "<0.001"  # no replicate crossed zero
    assert fmt_p(0.0, 200) == "<0.005"
    assert fmt_p(0.0464, 1000) == "0.046"
    assert fmt_p(None) == "-"


def test_fmt_prints_no_negative_zero():
    from crsbench.tables import fmt

    assert fmt(-1e-9) == "0.0000" and fmt(-0.00005, 3) == "0.000"
    assert fmt(-0.0123) == "-0.0123" and fmt(None) == "-"
