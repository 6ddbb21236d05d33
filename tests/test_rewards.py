"""The built-in rewards (plugins/rewards) on hand-made inputs with hand-computed values,
the combined reward, and their registration through the plugin registry."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from crsbench import Reward, UserError, hookimpl
from crsbench.plugins import PluginRegistry
from crsbench_plugins.rewards import plugin as rewards_plugin
from crsbench_plugins.rewards.combined import CombinedReward
from crsbench_plugins.rewards.rewards import (BleuReward, CriticReward, DistinctReward, EmotionReward,
                                              JudgeReward, LengthReward, RecHitReward, bare_title)

BUILTIN = {"bleu", "distinct", "rec_hit", "emotion", "length", "critic", "judge"}


def sample(response="", targets=(), context=(), roles=None):
    context = list(context)
    return {"sample_id": "d1-1", "dialog_id": "d1", "context": context,
            "context_roles": roles if roles is not None else ["seeker"] * len(context),
            "context_items": [], "targets": list(targets), "target_feedback": ["liked"] * len(targets),
            "response": response, "response_template": response}


@pytest.fixture
def registry():
    reg = PluginRegistry()
    reg.register_plugin(rewards_plugin, "rewards")
    return reg


# -- registration -----------------------------------------------------------------------------
def test_rewards_are_registered_through_the_registry(registry):
    entries = registry.rewards()
    assert set(entries) == BUILTIN
    assert all(issubclass(e.obj, Reward) and e.plugin == "rewards" for e in entries.values())
    assert entries["length"].obj is LengthReward
    assert all(e.obj.description for e in entries.values())
    assert registry.plugins["rewards"].error is None


def test_rewards_are_registered_through_the_entry_point(monkeypatch):
    monkeypatch.setenv("CRSBENCH_PLUGINS", "rewards")
    reg = PluginRegistry()
    reg.load_entry_points()
    assert reg.plugins["rewards"].error is None
    assert set(reg.rewards()) == BUILTIN


def test_registering_does_not_import_torch_or_nltk():
    code = ("import sys; from crsbench.plugins import PluginRegistry; "
            "import crsbench_plugins.rewards.plugin as p; r = PluginRegistry(); r.register_plugin(p, 'rewards'); "
            "assert len(r.rewards()) == 7, r.rewards(); "
            "heavy = [m for m in ('torch', 'nltk', 'transformers', 'scipy') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- bleu -------------------------------------------------------------------------------------
def test_bleu_hand_computed():
    ref = "the cat is on the mat"
    samples = [sample(ref)] * 5
    hyps = [ref, "the cat sat on the mat", "the cat", "dogs bark loudly", ""]
    # default n=2: identical 1; 3 of 5 bigrams match (the cat, on the, the mat), BP 1;
    # "the cat": bigram precision 1, BP exp(1 - 6/2); no overlap 0; empty 0
    assert BleuReward().score(samples, hyps) == pytest.approx([1.0, 0.6, math.exp(-2), 0.0, 0.0])
    # n=1: 5 of 6 unigrams (the x2 clipped to 2, cat, on, mat)
    assert BleuReward(n=1).score(samples[:2], hyps[:2]) == pytest.approx([1.0, 5 / 6])
    # a list of orders is averaged
    assert BleuReward(n=[1, 2]).score(samples[1:2], hyps[1:2]) == pytest.approx([(5 / 6 + 0.6) / 2])


def test_bleu_matches_the_metric():
    from crsbench.metrics.generation import sentence_bleu_all

    refs = ["i think you would like the matrix", "have you seen it ? it is great"]
    hyps = ["you would like the matrix a lot", "have you seen it ? it is fun"]
    expected = sentence_bleu_all(hyps, refs)
    for n in range(1, 5):
        got = BleuReward(n=n).score([sample(r) for r in refs], hyps)
        assert got == pytest.approx(list(expected[:, n - 1]))


@pytest.mark.parametrize("bad", [0, 5, [], [1, 7], "2"])
def test_bleu_rejects_bad_orders(bad):
    with pytest.raises(UserError, match="option n"):
        BleuReward(n=bad)


def test_unknown_option_is_a_user_error():
    with pytest.raises(UserError, match=r"unknown option\(s\) 'max_length'.*known: falloff, max_len, min_len"):
        LengthReward(max_length=3)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="2 samples but 1 responses"):
        DistinctReward().score([sample(), sample()], ["a b"])


# -- distinct ---------------------------------------------------------------------------------
def test_distinct_hand_computed():
    hyps = ["a b a b a b", "one two three", "hi", "", "a a a a"]
    # bigrams: ab ba ab ba ab -> 2/5; all distinct -> 1; no bigram -> 0; empty -> 0; aa x3 -> 1/3
    assert DistinctReward().score([sample()] * 5, hyps) == pytest.approx([0.4, 1.0, 0.0, 0.0, 1 / 3])
    # unigrams: {a, b} of 4; one token -> 1
    assert DistinctReward(n=1).score([sample()] * 2, ["a b a b", "hi"]) == pytest.approx([0.5, 1.0])
    with pytest.raises(UserError):
        DistinctReward(n=0)


# -- rec_hit ----------------------------------------------------------------------------------
NAMES = {1: "Police Academy  (1984)", 2: "It (2017)", 3: "The Matrix (1999 film)", 4: "Up"}


@pytest.mark.parametrize("title, bare", [
    ("Police Academy  (1984)", "Police Academy"), ("The Matrix (1999 film)", "The Matrix"),
    ("Titanic (film)", "Titanic"), ("Se7en", "Se7en"), ("Her (2013)", "Her"),
    ("Alien (Director's Cut)", "Alien (Director's Cut)"), ("(500) Days of Summer (2009)", "(500) Days of Summer"),
])
def test_bare_title(title, bare):
    assert bare_title(title) == bare


@pytest.mark.parametrize("response, targets, hit", [
    ("Have you seen police   ACADEMY? It's a classic", [1], 1.0),   # case and spacing ignored
    ("Police Academy (1984) is great", [1], 1.0),                  # with the year too
    ("you might like the matrix!", [3], 1.0),                      # "(1999 film)" dropped
    ("you might like the matrix!", [1, 3], 1.0),                   # any target counts
    ("you might like the matrix!", [1], 0.0),                      # not a target
    ("try the academy movies", [1], 0.0),                          # partial title
    ("Policeacademyfans unite", [1], 0.0),                         # not a whole phrase
    ("it is scary", [2], 0.0),                                     # short title: case must match
    ("Have you seen It?", [2], 1.0),
    ("Thumbs up for that one", [4], 0.0),
    ("", [1], 0.0),
    ("Police Academy", [], 0.0),                                   # no targets
])
def test_rec_hit_item_names(response, targets, hit):
    assert RecHitReward(item_names=NAMES).score([sample(targets=targets)], [response]) == [hit]


def test_rec_hit_string_keys_and_find_items():
    reward = RecHitReward(item_names={"1": "Police Academy (1984)"})  # a JSON config's keys
    assert reward.score([sample(targets=[1])], ["police academy"]) == [1.0]

    def find_items(text):
        return [7] if "@7" in text else [8] if "@8" in text else []

    reward = RecHitReward(find_items=find_items)
    samples = [sample(targets=[7])] * 3
    assert reward.score(samples, ["see @7", "see @8", "nothing"]) == [1.0, 0.0, 0.0]
    both = RecHitReward(find_items=find_items, item_names={7: "Jaws (1975)"})
    assert both.score(samples, ["see @7", "jaws!", "see @8"]) == [1.0, 1.0, 0.0]


def test_rec_hit_needs_names_or_linker():
    with pytest.raises(UserError, match="item_names"):
        RecHitReward()
    with pytest.raises(UserError, match="callable"):
        RecHitReward(find_items="not callable")


# -- emotion ----------------------------------------------------------------------------------
class TableAnnotator:
    """Looks each text up in a table; counts its calls."""

    def __init__(self, table):
        self.table = table
        self.calls = 0

    def annotate(self, texts):
        self.calls += 1
        return [dict(self.table[t]) for t in texts]


TABLE = {"s-happy": {"happy": 1.0}, "s-like": {"like": 1.0}, "rec": {"neutral": 1.0},
         "r-happy": {"happy": 1.0}, "r-mixed": {"happy": 0.5, "like": 0.5}, "r-neg": {"negative": 1.0},
         "r-unnormalised": {"happy": 2.0, "like": 2.0}}


def emotion_sample():
    return sample(context=["s-happy", "rec", "s-like", "rec"], roles=["seeker", "recommender", "seeker", "recommender"])


def test_emotion_tv_hand_computed():
    annotator = TableAnnotator(TABLE)
    reward = EmotionReward(annotator=annotator)
    no_seeker = sample(context=["rec"], roles=["recommender"])
    samples = [emotion_sample()] * 4 + [no_seeker]
    # seeker = mean(happy, like) = {happy .5, like .5}
    got = reward.score(samples, ["r-happy", "r-mixed", "r-neg", "r-unnormalised", "r-happy"])
    # 1 - 0.5 * (|1 - .5| + |0 - .5|) = 0.5; identical -> 1; disjoint -> 0; normalised first -> 1;
    # no seeker turn -> 0
    assert got == pytest.approx([0.5, 1.0, 0.0, 1.0, 0.0])
    assert annotator.calls == 1  # responses and seeker turns annotated in one batch


def test_emotion_cosine_and_seeker_turns():
    cosine = EmotionReward(annotator=TableAnnotator(TABLE), measure="cosine")
    # (1, 0) . (.5, .5) / (1 * sqrt(.5))
    assert cosine.score([emotion_sample()] * 2, ["r-happy", "r-mixed"]) == pytest.approx([math.sqrt(0.5), 1.0])
    last_only = EmotionReward(annotator=TableAnnotator(TABLE), seeker_turns=1)  # seeker = like
    assert last_only.score([emotion_sample()] * 2, ["r-happy", "r-mixed"]) == pytest.approx([0.0, 0.5])
    with pytest.raises(UserError, match="measure"):
        EmotionReward(measure="kl")


def test_emotion_with_the_lexicon_annotator():
    pytest.importorskip("crsbench_plugins.ecr.emotion")
    s = sample(context=["I love funny movies, haha that was great!", "What else do you like?",
                        "I really enjoyed Superbad, it was hilarious"], roles=["seeker", "recommender", "seeker"])
    matching, clashing = EmotionReward().score([s, s], ["Glad you loved it, it's hilarious! You will love this one",
                                                         "I hate it. It is boring and terrible."])
    assert 0.0 <= clashing < matching <= 1.0


# -- length -----------------------------------------------------------------------------------
def words(n):
    return " ".join(["w"] * n)


def test_length_hand_computed():
    reward = LengthReward(min_len=4, max_len=6)  # falloff defaults to max_len = 6
    lengths = [0, 2, 4, 5, 6, 9, 12, 20]
    assert reward.score([sample()] * len(lengths), [words(n) for n in lengths]) == \
        pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0])
    steep = LengthReward(min_len=4, max_len=6, falloff=2)
    assert steep.score([sample()] * 2, [words(7), words(8)]) == pytest.approx([0.5, 0.0])
    default = LengthReward()  # 5..30
    assert default.score([sample()] * 3, [words(1), words(30), words(45)]) == pytest.approx([0.2, 1.0, 0.5])


@pytest.mark.parametrize("options", [{"min_len": 5, "max_len": 4}, {"max_len": 0}, {"falloff": 0}])
def test_length_rejects_bad_ranges(options):
    with pytest.raises(UserError, match="min_len"):
        LengthReward(**options)


# -- critic (the reward side; the critic itself is in test_critic.py) -------------------------
class FixedCritic:
    def __init__(self):
        self.seen = None

    def score(self, contexts, responses, head="combined", weights=None, batch_size=64):
        self.seen = (contexts, head, weights)
        return np.array([len(r) / 10 for r in responses])


def test_critic_reward_passes_contexts_and_head():
    critic = FixedCritic()
    reward = CriticReward(critic=critic, head="informativeness")
    assert reward.score([sample(context=["a", "b"]), sample()], ["12345", ""]) == pytest.approx([0.5, 0.0])
    assert critic.seen == ([["a", "b"], []], "informativeness", None)
    with pytest.raises(UserError, match="needs option critic"):
        CriticReward()
    with pytest.raises(UserError, match="min_spearman"):
        CriticReward(critic=critic, min_spearman=0.3)


def test_judge_reward_is_the_judges_metric_scaled_to_one():
    """The learned judge's own relevance score, / 9, with the sample's context; 'mean' averages
    the rubric's metrics."""
    from crsbench.judge import JudgeInput
    from crsbench.judge_eval import make_judge

    spec = {"name": "minilm-human-a", "rubric": "crsarena-turn-v1"}
    samples = [sample(context=["Hi! I love scary movies, any good horror?"]),
               sample(context=["Can you suggest a comedy for tonight?"])]
    replies = ["You should watch The Conjuring (2013), it is terrifying!", "ok"]
    judged = make_judge(spec, cache=False).score([JudgeInput(s["context"], r, s["context_roles"])
                                                  for s, r in zip(samples, replies)])
    relevance = JudgeReward(judge=spec, metric="relevance").score(samples, replies)
    assert relevance == pytest.approx([j.scores["relevance"] / 9 for j in judged])
    assert relevance[0] > relevance[1]  # a fitting recommendation beats "ok"
    mean = JudgeReward(judge=spec).score(samples, replies)
    assert mean == pytest.approx([np.mean(list(j.scores.values())) / 9 for j in judged])
    with pytest.raises(UserError, match="not one of the judge's"):
        JudgeReward(judge=spec, metric="lifelikeness").score(samples, replies)
    with pytest.raises(UserError, match="needs option judge"):
        JudgeReward()


# -- combined ---------------------------------------------------------------------------------
def test_combined_components_and_total(registry):
    config = {"length": 0.5, "distinct": {"weight": 2.0, "n": 1}, "bleu": -1.0}
    reward = CombinedReward(config, options={"length": {"min_len": 4, "max_len": 6}}, registry=registry)
    ref = "the cat is on the mat"
    samples = [sample(ref), sample(ref)]
    responses = ["the cat is on the mat", "a a"]
    total, components = reward.score_components(samples, responses)
    assert list(components) == ["length", "distinct", "bleu"]
    np.testing.assert_allclose(components["length"], [1.0, 0.5])
    np.testing.assert_allclose(components["distinct"], [5 / 6, 0.5])
    np.testing.assert_allclose(components["bleu"], [1.0, 0.0])
    np.testing.assert_allclose(total, [0.5 * 1.0 + 2 * 5 / 6 - 1.0, 0.5 * 0.5 + 2 * 0.5 - 0.0])
    assert reward.score(samples, responses) == pytest.approx(list(total))
    assert reward.weights == {"length": 0.5, "distinct": 2.0, "bleu": -1.0}
    summary = CombinedReward.summary(total, components)
    assert summary == pytest.approx({"reward/total": float(total.mean()), "reward/length": 0.75,
                                     "reward/distinct": (5 / 6 + 0.5) / 2, "reward/bleu": 0.5})


def test_combined_unknown_name_lists_known_ones(registry):
    with pytest.raises(UserError) as err:
        CombinedReward({"blue": 1.0, "length": 1.0}, registry=registry)
    message = str(err.value)
    assert "'blue'" in message and "did you mean 'bleu'" in message
    assert "known: bleu, critic, distinct, emotion, judge, length, rec_hit" in message
    with pytest.raises(UserError, match="'lenght'"):  # options for a reward that is not configured
        CombinedReward({"length": 1.0}, options={"lenght": {"min_len": 2}}, registry=registry)


@pytest.mark.parametrize("config, match", [
    ({}, "empty"), ({"length": "heavy"}, "must be a number"), ({"length": {"min_len": 3}}, "'weight'"),
    ({"length": float("nan")}, "nan"),
])
def test_combined_bad_config(registry, config, match):
    with pytest.raises(UserError, match=match):
        CombinedReward(config, registry=registry)


def test_combined_uses_the_process_registry_and_third_party_rewards(isolated_registry):
    class Shouty(Reward):
        name = "shouty"
        description = "Share of '!' characters (test plugin)."

        def score(self, samples, responses):
            return [r.count("!") / max(len(r), 1) for r in responses]

    class ThirdParty:
        @hookimpl
        def register_rewards(self, register):
            register(Shouty)

    isolated_registry.register_plugin(rewards_plugin, "rewards")
    isolated_registry.register_plugin(ThirdParty(), "third_party")
    reward = CombinedReward({"shouty": 2.0, "length": 1.0}, options={"length": {"min_len": 1, "max_len": 1}})
    total, components = reward.score_components([sample()] * 2, ["hi!!", "no"])
    np.testing.assert_allclose(components["shouty"], [0.5, 0.0])
    np.testing.assert_allclose(total, [2.0, 1.0])


def test_combined_rejects_non_finite_component(registry):
    class Broken(Reward):
        name = "broken"

        def score(self, samples, responses):
            return [float("nan")] * len(responses)

    reward = CombinedReward({"broken": 1.0}, registry={"broken": Broken})  # a {name: class} mapping works too
    with pytest.raises(ValueError, match="'broken' returned non-finite"):
        reward.score([sample()], ["x"])
