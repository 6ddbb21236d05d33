"""Generation metrics against values computed by hand."""
import math

import numpy as np
import pytest

from crsbench.metrics import generation as gen
from crsbench.metrics.base import GENERATION, Units


def units(hyps, refs=None, hyp_items=None):
    refs = refs if refs is not None else [""] * len(hyps)
    hyp_items = hyp_items if hyp_items is not None else [0] * len(hyps)
    return Units(GENERATION, np.arange(len(hyps)), {"hyp": list(hyps), "ref": list(refs),
                                                    "hyp_items": np.array(hyp_items, dtype=float)})


def metric(name):
    return {m.name: m for m in gen.all_metrics()}[name]


def test_names_and_descriptions():
    ms = gen.all_metrics()
    names = [m.name for m in ms]
    assert len(names) == len(set(names))
    assert set(names) == {"bleu-1", "bleu-2", "bleu-3", "bleu-4", "corpus_bleu",
                          "dist-1", "dist-2", "dist-3", "dist-4",
                          "distinct_ratio-1", "distinct_ratio-2", "distinct_ratio-3", "distinct_ratio-4",
                          "rouge-1", "rouge-2", "rouge-l", "item_ratio", "mean_length"}
    for m in ms:
        assert m.kind == GENERATION
        assert m.description and "\n" not in m.description


# -- sentence BLEU-n ---------------------------------------------------------------------
# Pair A: hyp "the cat sat on mat" (5 tokens), ref "the cat sat on the mat" (6 tokens)
#   1-grams: the cat sat on mat          -> all 5 in ref                  p1 = 5/5
#   2-grams: the·cat cat·sat sat·on on·mat -> ref has the·cat cat·sat sat·on on·the the·mat
#                                         -> 3 of 4                         p2 = 3/4
#   3-grams: the·cat·sat cat·sat·on sat·on·mat -> first two in ref        p3 = 2/3
#   4-grams: the·cat·sat·on cat·sat·on·mat     -> first one in ref        p4 = 1/2
#   brevity penalty: c = 5 < r = 6 -> exp(1 - 6/5) = exp(-0.2)
#   BLEU-n (single weight on order n) = BP * p_n
# Pair B: hyp "the the the" (3), ref "the cat" (2)
#   1-grams: "the" x3, clipped to its ref count 1                          p1 = 1/3
#   2-grams: the·the x2, none in ref                                       p2 = 0 -> BLEU-2..4 = 0
#   brevity penalty: c = 3 >= r = 2 -> 1
BP_A = math.exp(-0.2)
HYP_A, REF_A = "the cat sat on mat", "the cat sat on the mat"
HYP_B, REF_B = "the the the", "the cat"


@pytest.mark.parametrize("n,expected", [(1, BP_A * 1.0), (2, BP_A * 3 / 4), (3, BP_A * 2 / 3), (4, BP_A * 1 / 2)])
def test_sentence_bleu_single_pair(n, expected):
    assert metric(f"bleu-{n}").compute(units([HYP_A], [REF_A])) == pytest.approx(expected, abs=1e-12)


def test_sentence_bleu_mean_over_responses_with_clipping_and_empty():
    u = units([HYP_A, HYP_B, ""], [REF_A, REF_B, "anything at all"])
    # the empty response is left out: ECR / UniCRS divide the summed BLEU by the non-empty responses
    assert metric("bleu-1").compute(u) == pytest.approx((BP_A + 1 / 3) / 2, abs=1e-12)
    assert metric("bleu-2").compute(u) == pytest.approx((BP_A * 3 / 4 + 0) / 2, abs=1e-12)
    # no bigram overlap at all is exactly 0, not nltk's 1e-308
    assert metric("bleu-2").compute(units([HYP_B], [REF_B])) == 0.0


def test_sentence_bleu_uses_whitespace_tokens_as_is():
    # hyp tokens: the, Cat, sat, on, "mat." vs ref "the cat sat on the mat": "Cat" != "cat" and
    # "mat." != "mat", so only the, sat, on match -> p1 = 3/5; lengths 5 < 6 -> BP = exp(-0.2)
    u = units(["the Cat sat on mat."], [REF_A])
    assert metric("bleu-1").compute(u) == pytest.approx(BP_A * 3 / 5, abs=1e-12)


def test_empty_everything():
    u = units(["", "   "], ["", ""])
    for name in ("rouge-1", "rouge-l", "mean_length", "item_ratio"):
        assert metric(name).compute(u) == 0.0, name
    # no n-gram and no non-empty response: BLEU-n (a mean over non-empty responses) and the
    # distinct metrics are undefined
    for name in ("bleu-1", "bleu-4", "dist-1", "distinct_ratio-1"):
        assert math.isnan(metric(name).compute(u)), name


def test_no_units_gives_nan():
    u = units([])
    for m in gen.all_metrics():
        assert math.isnan(m.score(m.prepare(u), np.ones(0))), m.name


# -- dist-n vs distinct_ratio-n ----------------------------------------------------------
# Responses: "a b a b", "a b c", ""  (2 non-empty)
#   1-grams: a b a b | a b c       distinct {a, b, c} = 3, total 4 + 3 = 7
#   2-grams: ab ba ab | ab bc      distinct {ab, ba, bc} = 3, total 3 + 2 = 5
#   3-grams: aba bab | abc         distinct 3, total 3
#   4-grams: abab | -              distinct 1, total 1
#   dist-n = distinct / 2 non-empty responses; distinct_ratio-n = distinct / total
DIST_HYPS = ["a b a b", "a b c", ""]


@pytest.mark.parametrize("n,dist,ratio", [(1, 3 / 2, 3 / 7), (2, 3 / 2, 3 / 5), (3, 3 / 2, 1.0), (4, 1 / 2, 1.0)])
def test_dist_vs_distinct_ratio(n, dist, ratio):
    u = units(DIST_HYPS)
    assert metric(f"dist-{n}").compute(u) == pytest.approx(dist)
    assert metric(f"distinct_ratio-{n}").compute(u) == pytest.approx(ratio)


def test_distinct_weights():
    u = units(DIST_HYPS)
    d1, r1, d2 = metric("dist-1"), metric("distinct_ratio-1"), metric("dist-2")
    # weights (0, 1, 1): only "a b c" and "" remain: 3 distinct 1-grams, 1 non-empty, 3 total
    assert d1.score(d1.prepare(u), np.array([0.0, 1.0, 1.0])) == 3.0
    assert r1.score(r1.prepare(u), np.array([0.0, 1.0, 1.0])) == 1.0
    # weights (2, 1, 0): still 3 distinct 1-grams; 3 non-empty (2 + 1); 2*4 + 3 = 11 1-grams;
    # 2-grams: distinct {ab, ba, bc} = 3 over 3 non-empty responses
    w = np.array([2.0, 1.0, 0.0])
    assert d1.score(d1.prepare(u), w) == pytest.approx(1.0)
    assert r1.score(r1.prepare(u), w) == pytest.approx(3 / 11)
    assert d2.score(d2.prepare(u), w) == pytest.approx(1.0)


# -- ROUGE -------------------------------------------------------------------------------
# hyp "The cat sat." ref "the cat was sat down"; rouge-score lowercases and keeps
# alphanumeric tokens: hyp = the cat sat (3), ref = the cat was sat down (5)
#   ROUGE-1: overlap {the, cat, sat} = 3: P = 3/3, R = 3/5, F = 2PR/(P+R) = 1.2/1.6 = 0.75
#   ROUGE-2: hyp {the·cat, cat·sat}, ref {the·cat, cat·was, was·sat, sat·down}: overlap 1
#            P = 1/2, R = 1/4, F = 2 * 1/8 / (3/4) = 1/3
#   ROUGE-L: LCS = the cat sat (3): P = 1, R = 3/5, F = 0.75
@pytest.mark.parametrize("name,expected", [("rouge-1", 0.75), ("rouge-2", 1 / 3), ("rouge-l", 0.75)])
def test_rouge_hand_example(name, expected):
    u = units(["The cat sat.", ""], ["the cat was sat down", "whatever"])
    # the empty second response scores 0 and counts in the mean
    assert metric(name).compute(u) == pytest.approx(expected / 2, abs=1e-12)


# -- corpus BLEU -------------------------------------------------------------------------
CORPORA = [
    (["i like the movie", "you should watch <movie>", "", "the the the cat"],
     ["i like that movie a lot", "have you seen <movie> ?", "hello there", "the cat sat"]),
    # no 3-gram or 4-gram match: sacrebleu's exp smoothing path
    (["hello there", "what do you like ?"], ["hello friend", "what kind of movies do you like ?"]),
    # long hypotheses: no brevity penalty; perfect match
    (["the cat sat on the mat ."], ["the cat sat on the mat ."]),
    (["Have you seen Inception (2010)? It's great!", "I don't know."],
     ["Have you watched Inception (2010)?", "I do not know that one, sorry."]),
    (["a", "b"], ["a b c d e", "c"]),  # fewer than 4 tokens in the hypotheses
]


@pytest.mark.parametrize("hyps,refs", CORPORA)
def test_corpus_bleu_equals_sacrebleu(hyps, refs):
    import sacrebleu

    expected = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert metric("corpus_bleu").compute(units(hyps, refs)) == pytest.approx(expected, abs=1e-6)


def test_corpus_bleu_weights_equal_sacrebleu_on_the_resampled_corpus():
    import sacrebleu

    hyps, refs = CORPORA[0][0] + CORPORA[3][0], CORPORA[0][1] + CORPORA[3][1]
    w = np.array([2, 0, 1, 3, 1, 2], dtype=float)
    idx = np.repeat(np.arange(len(hyps)), w.astype(int))
    expected = sacrebleu.corpus_bleu([hyps[i] for i in idx], [[refs[i] for i in idx]]).score
    m = metric("corpus_bleu")
    assert m.score(m.prepare(units(hyps, refs)), w) == pytest.approx(expected, abs=1e-6)


# -- simple statistics -------------------------------------------------------------------
def test_item_ratio_and_mean_length():
    u = units(["a b c", "", "x  y", "<movie> is good"], hyp_items=[0, 2, 1, 0])
    # responses with a mention: 2 of 4
    assert metric("item_ratio").compute(u) == 0.5
    # lengths 3, 0, 2 (double space is one separator), 3 -> 8/4
    assert metric("mean_length").compute(u) == 2.0


# -- weights: a weight of 2 equals duplicating the unit ----------------------------------
W_HYPS = ["i like the movie", "", "the the the cat", "you should watch <movie> , it is great",
          "i like the cat"]
W_REFS = ["i like that movie a lot", "hi", "the cat sat", "have you seen <movie> ?", "the cat likes me"]
W_ITEMS = [0, 0, 0, 1, 0]


@pytest.mark.parametrize("name", [m.name for m in gen.all_metrics()])
def test_weight_two_equals_duplicating_the_unit(name):
    m = metric(name)
    w = np.array([2.0, 1.0, 0.0, 3.0, 1.0])
    idx = np.repeat(np.arange(len(W_HYPS)), w.astype(int))
    duplicated = units([W_HYPS[i] for i in idx], [W_REFS[i] for i in idx], [W_ITEMS[i] for i in idx])
    assert m.score(m.prepare(units(W_HYPS, W_REFS, W_ITEMS)), w) == pytest.approx(m.compute(duplicated), abs=1e-9)


def test_shared_cache_follows_the_texts():
    # the per-response cache must not return scores of another set of responses
    a = metric("bleu-1").compute(units([HYP_A], [REF_A]))
    b = metric("bleu-1").compute(units([HYP_A], [HYP_A]))
    assert a == pytest.approx(BP_A) and b == pytest.approx(1.0)


# -- the bootstrap interval of a set statistic -----------------------------------------------
def test_distinct_bootstrap_is_bias_corrected():
    """Resampling with replacement repeats responses, which adds no distinct n-grams: the raw
    replicates of dist-2 sit below the point estimate; the harness recentres them."""
    from crsbench.bootstrap import draw_dialog_counts, percentile_ci, replicate_scores

    rng = np.random.default_rng(0)
    vocab = [f"w{k}" for k in range(400)]
    hyps = [" ".join(rng.choice(vocab, size=12)) for _ in range(300)]
    u = units(hyps)
    d2 = metric("dist-2")
    point = d2.compute(u)
    counts = draw_dialog_counts(len(hyps), 300, seed=0)

    class Uncorrected(type(d2)):
        bootstrap_bias_correction = False

    raw = replicate_scores(Uncorrected(2), d2.prepare(u), u.dialog, counts)
    assert percentile_ci(raw)[1] < point  # the plain interval excludes the point estimate
    fixed = replicate_scores(d2, d2.prepare(u), u.dialog, counts)
    assert fixed.mean() == pytest.approx(point)
    lo, hi = percentile_ci(fixed)
    assert lo < point < hi
    np.testing.assert_allclose(fixed - raw, point - raw.mean())  # a shift, spread unchanged
    # a mean metric is not touched
    ml = metric("mean_length")
    assert ml.bootstrap_bias_correction is False
