"""The judge critic (plugins/ecr_rl/critic*.py): it learns a learnable score, its validation
gate stops a critic that learned nothing, and it survives a save/load round trip.

A cheap deterministic encoder stands in for MiniLM; one slow test uses the real encoder.
"""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from crsbench import DegenerateRunError, UserError
from crsbench_plugins.ecr_rl.critic import (CONFIG_FILE, DEFAULTS, REPORT_FILE, WEIGHTS_FILE, Critic, check_critic,
                                            train_critic)
from crsbench_plugins.rewards.rewards import CriticReward

METRICS = ["shouting", "wordiness"]
FAST = {"metrics": METRICS, "epochs": 100, "patience": 20, "cache_embeddings": False}
WORDS = "the movie was good great fun nice scary long old new love like watch".split()


class HashBagEncoder:
    """Hashed bag of words (31 buckets) plus the count of '!' (deterministic, no model)."""

    name = "hash-bag-32"

    def __init__(self):
        self.calls = 0

    def encode(self, texts, batch_size=64):
        self.calls += 1
        out = np.zeros((len(texts), 32), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.split():
                out[i, zlib.crc32(word.encode()) % 31] += 1
            out[i, 31] = text.count("!")
        return out  # numpy is accepted as well as a torch tensor


def make_pairs(n=250, seed=0):
    """Responses of 3-9 words plus 0-5 ' !'; shouting = 1.5 * '!' count, wordiness = words.
    Five replies per context (50 contexts for 250 pairs)."""
    rng = np.random.default_rng(seed)
    pairs, scores = [], []
    for i in range(n):
        n_words, n_bang = int(rng.integers(3, 10)), int(rng.integers(0, 6))
        response = " ".join(rng.choice(WORDS, size=n_words)) + " !" * n_bang
        pairs.append((["hello there", f"turn {i // 5}", "what do you like?"], response))
        scores.append({"shouting": 1.5 * n_bang, "wordiness": float(n_words)})
    return pairs, scores


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small MLPs: one thread is as fast and leaves the shared cores alone."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def learnable(one_torch_thread, tmp_path_factory):
    out = tmp_path_factory.mktemp("critic")
    pairs, scores = make_pairs()
    report = train_critic(pairs, scores, FAST, out, seed=0, encoder=HashBagEncoder())
    return pairs, scores, report, out


def test_learnable_scores_give_high_heldout_spearman(learnable):
    _, _, report, _ = learnable
    assert (report["n_pairs"], report["n_heldout"]) == (250, 50)
    assert (report["n_contexts"], report["n_contexts_heldout"], report["split"]) == (50, 10, "by context")
    assert report["n_train"] + report["n_val"] == 200
    for metric in METRICS:
        assert report["heads"][metric]["spearman"] > 0.8, report["heads"]
        assert report["heads"][metric]["r2"] > 0.5
    assert report["combined"]["spearman"] > 0.8 and report["combined"]["r2"] > 0.5
    assert check_critic(report, min_spearman=0.8, per_head=True) is report
    within = report["combined"]["within_context"]
    assert within["n_contexts"] == 10 and within["n_pairs"] > 50  # 10 x C(5, 2) = 100, less judge ties
    assert within["accuracy"] > 0.8 and within["ci_low"] > 0.7, within  # the gate's CI is far above 0.5
    across = report["combined"]["across_contexts"]
    assert across["ci_low"] < across["spearman"] < across["ci_high"] and across["n_contexts"] == 10
    json.dumps(report)  # JSON-ready; the critic rides along as an attribute
    assert isinstance(report.critic, Critic) and report.critic.report["combined"] == report["combined"]


def test_random_scores_fail_the_gate_with_the_numbers():
    pairs, _ = make_pairs()
    rng = np.random.default_rng(1)
    scores = rng.uniform(0, 9, size=(len(pairs), len(METRICS)))  # an (N, M) array works too
    # 100 held-out pairs: under the null |rho| has a standard deviation of about 0.1
    report = train_critic(pairs, scores, {**FAST, "heldout": 0.4}, None, seed=0, encoder=HashBagEncoder())
    rho = report["combined"]["spearman"]
    assert abs(rho) < 0.3, report["combined"]
    with pytest.raises(DegenerateRunError) as err:
        check_critic(report, min_spearman=0.3)
    message = str(err.value)
    assert f"held-out Spearman of the combined score {rho:.3f} < 0.3" in message
    for metric in METRICS:  # per-head numbers are named too
        assert f"{metric} {report['heads'][metric]['spearman']:.3f}" in message
    assert f"n_heldout={report['n_heldout']}" in message


@pytest.mark.parametrize("constant", ["all", "one head"])
def test_constant_scores_fail_the_gate(constant):
    pairs, scores = make_pairs(100)
    if constant == "all":
        scores = [{"shouting": 5.0, "wordiness": 5.0} for _ in pairs]
    else:
        scores = [{**s, "wordiness": 4.0} for s in scores]
    report = train_critic(pairs, scores, FAST, None, seed=0, encoder=HashBagEncoder())
    with pytest.raises(DegenerateRunError, match=r"~zero variance for head\(s\) .*wordiness \(std ") as err:
        check_critic(report, min_spearman=0.0)
    if constant == "all":
        assert "combined score have ~zero variance" in str(err.value)
        assert "combined score is undefined" in str(err.value)


def test_save_load_roundtrip_gives_identical_predictions(learnable):
    pairs, _, report, out = learnable
    assert {p.name for p in out.iterdir()} == {WEIGHTS_FILE, CONFIG_FILE, REPORT_FILE}
    assert json.loads((out / REPORT_FILE).read_text())["combined"] == report["combined"]
    loaded = Critic.load(out, encoder=HashBagEncoder())
    contexts, responses = [p[0] for p in pairs[:40]], [p[1] for p in pairs[:40]]
    before, after = report.critic.predict(contexts, responses), loaded.predict(contexts, responses)
    for metric in METRICS:
        np.testing.assert_array_equal(before[metric], after[metric])
        assert np.all((after[metric] >= 0) & (after[metric] <= 1))
    assert loaded.report["combined"] == report["combined"]
    assert (loaded.metrics, loaded.encoder_name) == (METRICS, "hash-bag-32")
    np.testing.assert_array_equal(loaded.score(contexts, responses),
                                  (before["shouting"] + before["wordiness"]) / 2)
    np.testing.assert_allclose(loaded.score(contexts, responses, weights={"shouting": 3, "wordiness": 1}),
                               0.75 * before["shouting"] + 0.25 * before["wordiness"])
    np.testing.assert_array_equal(loaded.score(contexts, responses, head="wordiness"), before["wordiness"])
    with pytest.raises(UserError, match="no head 'lifelikeness'"):
        loaded.score(contexts, responses, head="lifelikeness")


def test_prediction_orders_like_the_target(learnable):
    _, _, report, _ = learnable
    quiet, loud = report.critic.predict([["hi"], ["hi"]], ["the movie was good", "the movie was good ! ! ! !"])["shouting"]
    assert loud > quiet + 0.3


def test_training_is_seeded(learnable):
    pairs, scores, report, _ = learnable
    again = train_critic(pairs, scores, FAST, None, seed=0, encoder=HashBagEncoder())
    assert again["heads"] == report["heads"] and again["combined"] == report["combined"]
    other = train_critic(pairs, scores, FAST, None, seed=1, encoder=HashBagEncoder())
    assert other["combined"] != report["combined"]  # a different held-out split


def test_score_formats_and_missing_scores_agree(learnable):
    pairs, scores, report, _ = learnable
    columns = {m: [s[m] for s in scores] for m in METRICS}
    by_column = train_critic(pairs, columns, FAST, None, seed=0, encoder=HashBagEncoder())
    assert by_column["combined"] == report["combined"]
    holes = [dict(s, wordiness=None) if i % 10 == 0 else s for i, s in enumerate(scores)]
    with_holes = train_critic(pairs, holes, FAST, None, seed=0, encoder=HashBagEncoder())
    assert with_holes["heads"]["wordiness"]["n_heldout"] < 50 == with_holes["heads"]["shouting"]["n_heldout"]
    assert with_holes["combined"]["spearman"] > 0.8


def test_bad_inputs():
    pairs, scores = make_pairs(20)
    with pytest.raises(DegenerateRunError, match="5 scored pairs"):
        train_critic(pairs[:5], scores[:5], FAST, None, seed=0, encoder=HashBagEncoder())
    with pytest.raises(UserError, match="unknown key"):
        train_critic(pairs, scores, {**FAST, "epoch": 3}, None, seed=0, encoder=HashBagEncoder())
    with pytest.raises(UserError, match="shape"):
        train_critic(pairs, np.zeros((20, 3)), FAST, None, seed=0, encoder=HashBagEncoder())


def test_load_errors(learnable, tmp_path):
    _, _, _, out = learnable
    with pytest.raises(UserError, match="not a critic directory"):
        Critic.load(tmp_path, encoder=HashBagEncoder())

    class Wide:
        def encode(self, texts):
            return np.zeros((len(texts), 8), dtype=np.float32)

    with pytest.raises(UserError, match="expects 32-dim embeddings"):
        Critic.load(out, encoder=Wide()).predict([["hi"]], ["x"])
    with pytest.raises(UserError, match="trained with encoder 'hash-bag-32'"):
        Critic.load(out, encoder=Wide(), strict_encoder=True)


def test_check_critic_per_head_option():
    report = {"n_heldout": 50, "n_train": 200,
              "combined": {"spearman": 0.5, "r2": 0.2, "train_target_std": 0.2},
              "heads": {"x": {"spearman": 0.1, "train_target_std": 0.2},
                        "y": {"spearman": 0.7, "train_target_std": 0.2}}}
    assert check_critic(report, min_spearman=0.4, min_within_accuracy=None) is report
    with pytest.raises(DegenerateRunError, match=r"below 0.4 for head\(s\) x 0.100 \["):
        check_critic(report, min_spearman=0.4, per_head=True, min_within_accuracy=None)
    with pytest.raises(DegenerateRunError, match="combined score 0.500 < 0.6"):
        check_critic(report, min_spearman=0.6, min_within_accuracy=None)
    with pytest.raises(DegenerateRunError, match="within-context pairwise accuracy is undefined"):
        check_critic(report, min_spearman=0.4)  # a report without it does not pass the default gate


def test_critic_reward_scores_a_loaded_and_gated_critic(learnable):
    pairs, _, report, out = learnable
    samples = [{"context": c, "response": ""} for c, _ in pairs[:10]]
    responses = [r for _, r in pairs[:10]]
    loaded = Critic.load(out, encoder=HashBagEncoder())
    check_critic(loaded.report, min_spearman=0.8)  # the gate is the caller's, before the reward is used
    reward = CriticReward(critic=loaded, head="shouting")
    expected = report.critic.predict([s["context"] for s in samples], responses)["shouting"]
    assert reward.score(samples, responses) == pytest.approx(list(expected))
    with pytest.raises(DegenerateRunError, match="critic failed its validation gate"):
        check_critic(loaded.report, min_spearman=0.999)
    # the rewards plugin loads nothing itself (it imports no other plugin): path is refused, saying how
    with pytest.raises(UserError, match=r"path.*Critic.load"):
        CriticReward(path=str(out), encoder=HashBagEncoder())


def test_default_metrics_are_the_registered_rubrics_metrics():
    from crsbench import judge
    from crsbench_plugins.judges.rubrics import ECR_SUBJECTIVE

    pairs, scores = make_pairs(60)
    rng = np.random.default_rng(0)
    table = [{m: float(rng.integers(0, 10)) for m in ECR_SUBJECTIVE.metrics} for _ in pairs]
    report = train_critic(pairs, table, {**FAST, "metrics": None, "epochs": 5}, None, seed=0,
                          encoder=HashBagEncoder())
    assert report["metrics"] == list(ECR_SUBJECTIVE.metrics) == list(report["heads"])
    assert (DEFAULTS["score_min"], DEFAULTS["score_max"]) == (judge.SCORE_MIN, judge.SCORE_MAX)


@pytest.mark.slow
def test_real_minilm_encoder_learns_sentiment(tmp_path, monkeypatch):
    text_encoder = pytest.importorskip("crsbench_plugins.ecr.text_encoder")
    try:
        encoder = text_encoder.TextEncoder()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        pytest.skip(f"MiniLM is not installed: {exc}")
    monkeypatch.setenv("CRSBENCH_CACHE_DIR", str(tmp_path / "cache"))
    levels = {9.0: ["great", "wonderful", "fantastic", "brilliant", "delightful", "excellent", "lovely", "superb"],
              4.5: ["okay", "average", "so-so", "fine", "passable", "mediocre", "ordinary", "acceptable"],
              0.0: ["terrible", "awful", "boring", "dreadful", "horrible", "dull", "painful", "lousy"]}
    things = ["movie", "film", "comedy", "thriller", "story", "cast", "ending", "soundtrack", "script", "sequel"]
    pairs, scores = [], []
    for thing in things:
        for score, adjectives in levels.items():
            for adjective in adjectives:
                pairs.append(([f"Any {thing} to suggest?"], f"That {thing} was {adjective}."))
                scores.append({"positivity": score})
    report = train_critic(pairs, scores, {"metrics": ["positivity"], "epochs": 100, "cache_embeddings": True},
                          tmp_path / "critic", seed=0, encoder=encoder)
    assert report["encoder"] == encoder.cache_id
    check_critic(report, min_spearman=0.8)
    loaded = Critic.load(tmp_path / "critic", encoder=encoder)
    assert loaded.score([["hi"]], ["What a wonderful film."])[0] > loaded.score([["hi"]], ["What an awful film."])[0]


# -- the ridge head and the surface features -----------------------------------------------
RIDGE = {**FAST, "head": "ridge"}


def test_ridge_head_learns_and_chooses_its_penalty_by_cross_validation(tmp_path):
    pairs, scores = make_pairs()
    report = train_critic(pairs, scores, RIDGE, tmp_path / "ridge", seed=0, encoder=HashBagEncoder())
    assert (report["head"], report["n_train"], report["n_val"], report["n_heldout"]) == ("ridge", 200, 0, 50)
    for metric in METRICS:
        assert report["heads"][metric]["spearman"] > 0.8 and report["heads"][metric]["r2"] > 0.5, report["heads"]
        cv = report["ridge"][metric]["cv_mse"]
        assert report["ridge"][metric]["alpha"] == min(cv, key=cv.get)
        assert len(cv) == len(DEFAULTS["ridge_alphas"])
    check_critic(report, min_spearman=0.8, per_head=True)
    loaded = Critic.load(tmp_path / "ridge", encoder=HashBagEncoder())
    assert loaded.head == "ridge"
    contexts, responses = [p[0] for p in pairs[:30]], [p[1] for p in pairs[:30]]
    np.testing.assert_array_equal(loaded.score(contexts, responses), report.critic.score(contexts, responses))
    assert np.all((loaded.score(contexts, responses) >= 0) & (loaded.score(contexts, responses) <= 1))


def test_ridge_on_noise_fails_the_gate():
    pairs, _ = make_pairs()
    scores = np.random.default_rng(2).uniform(0, 9, size=(len(pairs), len(METRICS)))
    report = train_critic(pairs, scores, {**RIDGE, "heldout": 0.4}, None, seed=0, encoder=HashBagEncoder())
    assert abs(report["combined"]["spearman"]) < 0.3
    with pytest.raises(DegenerateRunError, match="critic failed its validation gate"):
        check_critic(report, min_spearman=0.3)


class BlindEncoder:
    """Sees nothing: every text embeds to the same vector."""

    name = "blind"

    def encode(self, texts, batch_size=64):
        return np.ones((len(texts), 4), dtype=np.float32)


def test_surface_features_carry_what_the_encoder_cannot_see(tmp_path):
    pairs, scores = make_pairs()  # wordiness = number of words: a surface property
    blind = train_critic(pairs, scores, RIDGE, None, seed=0, encoder=BlindEncoder())
    assert blind["combined"]["spearman"] is None  # constant predictions
    seeing = train_critic(pairs, scores, {**RIDGE, "surface_features": True}, tmp_path / "c", seed=0,
                          encoder=BlindEncoder())
    assert seeing["heads"]["wordiness"]["spearman"] > 0.9
    loaded = Critic.load(tmp_path / "c", encoder=BlindEncoder())
    assert loaded.surface
    short, long = loaded.predict([["hi"], ["hi"]], ["good movie", "a good movie with a long plot and fun"])["wordiness"]
    assert long > short


def test_surface_features_values():
    from crsbench_plugins.ecr_rl.critic import SURFACE_FEATURES, surface_features

    values = dict(zip(SURFACE_FEATURES, surface_features("You will love Heat (1995)! Love it.")))
    assert values["log_words"] == pytest.approx(np.log1p(7))
    assert values["type_token_ratio"] == pytest.approx(6 / 7)  # "love" twice, case-folded
    assert values["top_token_share"] == pytest.approx(2 / 7)
    assert values["log_sentences"] == pytest.approx(np.log1p(2))
    assert (values["ends_with_punct"], values["has_year"], values["has_exclamation"], values["has_question"]) == \
        (1.0, 1.0, 1.0, 0.0)
    empty = dict(zip(SURFACE_FEATURES, surface_features("")))
    assert empty["log_words"] == 0 and empty["type_token_ratio"] == 0 and empty["ends_with_punct"] == 0


def test_unknown_head_is_a_user_error():
    pairs, scores = make_pairs(20)
    with pytest.raises(UserError, match="head must be one of mlp, ridge"):
        train_critic(pairs, scores, {**FAST, "head": "forest"}, None, seed=0, encoder=HashBagEncoder())


def test_context_level_signal_passes_spearman_but_fails_the_within_context_gate():
    """The failure the gate exists for: the judge's score follows the context (learnable, so
    the pooled held-out Spearman is high) while the replies of one context are ordered at
    random. A group-relative RL advantage would be noise; the gate stops it."""
    rng = np.random.default_rng(3)
    pairs, scores = [], []
    for c in range(60):
        mood = "happy" if c % 2 else "sad"
        for _ in range(4):
            response = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 10))))
            pairs.append(([f"I feel {mood} today", f"turn {c}"], response))
            level = 7.0 if mood == "happy" else 2.0
            scores.append({"shouting": level + rng.uniform(0, 1), "wordiness": level + rng.uniform(0, 1)})
    cfg = {**FAST, "context_turns": 2, "heldout": 0.4}
    report = train_critic(pairs, scores, cfg, None, seed=0, encoder=HashBagEncoder())
    assert report["combined"]["spearman"] > 0.4, report["combined"]
    within = report["combined"]["within_context"]
    assert within["ci_low"] < 0.5 < within["ci_high"], within
    check_critic(report, min_spearman=0.4, min_within_accuracy=None)  # Spearman alone would let it through
    with pytest.raises(DegenerateRunError, match="cannot rank the replies of one context") as err:
        check_critic(report, min_spearman=0.4)
    assert f"on {within['n_pairs']} pairs of 24 held-out contexts" in str(err.value)


def test_pairwise_accuracy_counts_ties_and_kinds():
    from crsbench_plugins.ecr_rl.critic_stats import pairwise_accuracy

    group = np.array([0, 0, 0, 1, 1])
    target = np.array([1.0, 2.0, 2.0, 5.0, 3.0])  # one judge tie in context 0: not compared
    pred = np.array([0.1, 0.3, 0.2, 0.4, 0.4])    # a critic tie in context 1: half a point
    kinds = ["gt", "s", "s", "gt", "s"]
    out = pairwise_accuracy(group, pred, target, seed=0, kinds=kinds)
    assert out["n_pairs"] == 3 and out["n_contexts"] == 2
    assert out["accuracy"] == pytest.approx(2.5 / 3)
    assert out["by_kind"] == {"gt vs s": {"accuracy": pytest.approx(2.5 / 3), "n_pairs": 3}}
    assert out["ci_low"] <= out["accuracy"] <= out["ci_high"]


def test_a_critic_needs_several_contexts():
    pairs, scores = make_pairs(20)
    same = [(["one context"], r) for _, r in pairs]
    with pytest.raises(DegenerateRunError, match="from 1 context"):
        train_critic(same, scores, FAST, None, seed=0, encoder=HashBagEncoder())
