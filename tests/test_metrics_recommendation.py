"""Recommendation metrics against values computed by hand."""
import math
import subprocess
import sys

import numpy as np
import pytest

from crsbench.metrics import recommendation as rec
from crsbench.metrics.base import RECOMMENDATION, Units

INF = math.inf

# unit:      0        1           2        3           4           5          6        7
RANKS = [1.0, 3.0, INF, 12.0, INF, 10.0, 3.0, 50.0]
FEEDBACK = ["liked", "disliked", "liked", "disliked", "disliked", "unknown", "liked", "liked"]


def units(ranks=RANKS, feedback=FEEDBACK):
    return Units(RECOMMENDATION, np.arange(len(ranks)), {"rank": np.array(ranks, dtype=float),
                                                         "feedback": list(feedback)})


def metrics():
    return {m.name: m for m in rec.all_metrics()}


def test_names_and_descriptions():
    ms = rec.all_metrics()
    names = [m.name for m in ms]
    assert names == ["recall@1", "recall@10", "recall@50", "ndcg@10", "ndcg@50", "mrr@10", "mrr@50",
                     "rt@1", "rt@10", "rt@50", "auc"]
    for m in ms:
        assert m.kind == RECOMMENDATION
        assert m.description and "\n" not in m.description


# Hand values on the 8 units above (inf = unranked, never a hit):
#   recall@1 : rank <= 1 -> unit 0                      -> 1/8
#   recall@10: ranks 1, 3, 10, 3 (units 0, 1, 5, 6)     -> 4/8
#   recall@50: + 12 and 50 (units 3, 7)                 -> 6/8
#   ndcg@10  : 1/log2(2) + 1/log2(4) + 1/log2(11) + 1/log2(4) = 1 + .5 + 1/log2(11) + .5
#   ndcg@50  : ndcg@10 sum + 1/log2(13) + 1/log2(51)
#   mrr@10   : 1 + 1/3 + 1/10 + 1/3 ; mrr@50: + 1/12 + 1/50
#   rt@k over the liked units 0 (1), 2 (inf), 6 (3), 7 (50): rt@1 = 1/4, rt@10 = 2/4, rt@50 = 3/4
HAND = {
    "recall@1": 1 / 8,
    "recall@10": 4 / 8,
    "recall@50": 6 / 8,
    "ndcg@10": (2 + 1 / math.log2(11)) / 8,
    "ndcg@50": (2 + 1 / math.log2(11) + 1 / math.log2(13) + 1 / math.log2(51)) / 8,
    "mrr@10": (1 + 1 / 3 + 1 / 10 + 1 / 3) / 8,
    "mrr@50": (1 + 1 / 3 + 1 / 10 + 1 / 3 + 1 / 12 + 1 / 50) / 8,
    "rt@1": 1 / 4,
    "rt@10": 2 / 4,
    "rt@50": 3 / 4,
    # AUC: liked ranks {1, inf, 3, 50} vs disliked ranks {3, 12, inf}; better rank = higher score
    #   1   vs 3, 12, inf : win, win, win    -> 3
    #   inf vs 3, 12, inf : loss, loss, tie  -> 0.5
    #   3   vs 3, 12, inf : tie, win, win    -> 2.5
    #   50  vs 3, 12, inf : loss, loss, win  -> 1
    #   (3 + 0.5 + 2.5 + 1) / (4 * 3) = 7/12
    "auc": 7 / 12,
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_hand_values(name):
    assert metrics()[name].compute(units()) == pytest.approx(HAND[name], abs=1e-12)


def test_ties_at_cutoff_count_as_hits():
    # Two targets share rank 10 (e.g. from different samples): both are within @10.
    u = units([10.0, 10.0, 11.0, INF], ["liked"] * 4)
    m = metrics()
    assert m["recall@10"].compute(u) == pytest.approx(2 / 4)
    assert m["ndcg@10"].compute(u) == pytest.approx(2 * (1 / math.log2(11)) / 4)
    assert m["mrr@10"].compute(u) == pytest.approx(2 * 0.1 / 4)


def test_no_targets_gives_nan_not_crash():
    empty = units([], [])
    for m in rec.all_metrics():
        prepared = m.prepare(empty)
        assert math.isnan(m.score(prepared, np.ones(0))), m.name


def test_all_weights_zero_gives_nan():
    u = units()
    for m in rec.all_metrics():
        assert math.isnan(m.score(m.prepare(u), np.zeros(len(u)))), m.name


def test_rt_masks_targets_that_are_not_liked():
    m = metrics()
    # The disliked and unknown targets are hits at rank 1 but are not liked: rt@1 only sees
    # the liked target at rank 5 -> 0, while recall@1 = 2/3.
    u = units([1.0, 1.0, 5.0], ["disliked", "unknown", "liked"])
    assert m["rt@1"].compute(u) == 0.0
    assert m["recall@1"].compute(u) == pytest.approx(2 / 3)
    # no liked target at all -> NaN
    u = units([1.0, 2.0], ["disliked", "unknown"])
    assert math.isnan(m["rt@10"].compute(u))


def test_auc_one_class_is_nan():
    auc = metrics()["auc"]
    assert math.isnan(auc.compute(units([1.0, 2.0, INF], ["liked", "liked", "unknown"])))
    assert math.isnan(auc.compute(units([1.0, 2.0], ["disliked", "disliked"])))
    # both classes present but the liked one has zero weight
    u = units([1.0, 2.0, 3.0], ["liked", "disliked", "disliked"])
    assert math.isnan(auc.score(auc.prepare(u), np.array([0.0, 1.0, 1.0])))


def test_auc_ties():
    auc = metrics()["auc"]
    # all ranks equal -> every pair is a tie -> 1/2
    assert auc.compute(units([4.0, 4.0, 4.0], ["liked", "disliked", "disliked"])) == 0.5
    # everything unranked -> inf ties inf -> 1/2
    assert auc.compute(units([INF, INF], ["disliked", "liked"])) == 0.5
    # liked {2, inf}, disliked {2, 7}: (tie + win) + (loss + loss) = 1.5 / 4
    assert auc.compute(units([2.0, INF, 2.0, 7.0], ["liked", "liked", "disliked", "disliked"])) == 0.375
    # perfect and reversed separation
    assert auc.compute(units([1.0, 2.0, 3.0], ["liked", "liked", "disliked"])) == 1.0
    assert auc.compute(units([1.0, 2.0, 3.0], ["disliked", "disliked", "liked"])) == 0.0


def test_auc_weights():
    auc = metrics()["auc"]
    u = units([1.0, 3.0, 2.0], ["liked", "liked", "disliked"])
    # liked 1 beats disliked 2, liked 3 loses. Weights (2, 1, 5):
    #   (2*5*1 + 1*5*0) / ((2+1) * 5) = 10/15
    assert auc.score(auc.prepare(u), np.array([2.0, 1.0, 5.0])) == pytest.approx(2 / 3)


def _brute_force_auc(ranks, feedback, w):
    num = den_l = den_d = 0.0
    for i, (ri, fi) in enumerate(zip(ranks, feedback)):
        if fi == "liked":
            den_l += w[i]
        if fi == "disliked":
            den_d += w[i]
        for j, (rj, fj) in enumerate(zip(ranks, feedback)):
            if fi == "liked" and fj == "disliked":
                num += w[i] * w[j] * ((ri < rj) + 0.5 * (ri == rj))
    return num / (den_l * den_d)


def test_auc_matches_quadratic_definition_on_random_data():
    rng = np.random.default_rng(3)
    auc = metrics()["auc"]
    for _ in range(20):
        n = 40
        ranks = rng.integers(1, 8, n).astype(float)
        ranks[rng.random(n) < 0.3] = INF
        feedback = list(rng.choice(["liked", "disliked", "unknown"], n))
        w = rng.integers(0, 4, n).astype(float)
        expected = _brute_force_auc(ranks, feedback, w)
        assert auc.score(auc.prepare(units(ranks, feedback)), w) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", [m.name for m in rec.all_metrics()])
def test_weight_two_equals_duplicating_the_unit(name):
    m = metrics()[name]
    rng = np.random.default_rng(0)
    w = rng.integers(0, 4, len(RANKS)).astype(float)
    w[2] = 2.0  # the unranked liked target counts twice
    w[0] = 1.0
    w[1] = 1.0  # keep both AUC classes present
    idx = np.repeat(np.arange(len(RANKS)), w.astype(int))
    duplicated = units([RANKS[i] for i in idx], [FEEDBACK[i] for i in idx])
    assert m.score(m.prepare(units()), w) == pytest.approx(m.compute(duplicated), abs=1e-12)


def test_plugin_registers_every_builtin_metric():
    from crsbench.metrics import generation, plugin
    from crsbench_plugins.judges import plugin as judges_plugin

    seen = []
    plugin.register_metrics(seen.append)
    names = [m.name for m in seen]
    assert len(names) == len(set(names))
    assert set(names) == {m.name for m in rec.all_metrics() + generation.all_metrics()}
    assert {"recall@10", "auc", "bleu-2", "corpus_bleu", "dist-2", "rouge-l", "item_ratio"} <= set(names)
    # judge metrics come with their rubric, from the plugin that registers it
    from crsbench_plugins.judges.rubrics import RUBRICS

    judged = []
    judges_plugin.register_metrics(judged.append)
    assert [m.name for m in judged] == list(dict.fromkeys(m for r in RUBRICS for m in r.metrics))
    assert [m.name for m in judged][:5] == ["emotional_intensity", "emotional_persuasiveness",
                                            "logical_persuasiveness", "informativeness", "lifelikeness"]
    assert {"relevance", "interestingness", "dialogue_overall"} <= {m.name for m in judged}
    assert not set(names) & {m.name for m in judged}


def test_registering_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from crsbench.metrics import plugin\n"
        "plugin.register_metrics(lambda m: None)\n"
        "heavy = {'torch', 'nltk', 'sacrebleu', 'rouge_score', 'scipy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
