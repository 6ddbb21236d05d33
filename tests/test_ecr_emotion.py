"""ECR emotion labels: the rule annotator, beta/two-label selection, the shared MiniLM
encoder and its embedding cache, and the classifier trained on ReDial seeker utterances."""
from __future__ import annotations

import math
import time

import pytest

from crsbench_plugins.ecr.emotion import (
    EMOTIONS, Annotator, CallableAnnotator, EmotionClassifier, LexiconAnnotator, annotate_samples,
    keep_labels, label_distribution, make_annotator, normalize_probs, register_annotator, seeker_utterances,
    top_label,
)
from crsbench_plugins.ecr.text_encoder import EmbeddingCache, TextEncoder, get_encoder, minilm_dir

N_FAST = 2000  # seeker utterances in the fast classifier test (1,600 train + 400 held out)


@pytest.fixture(scope="module")
def lexicon():
    from crsbench_tasks.redial.task import RedialTask

    return LexiconAnnotator(mention_spans=RedialTask().mention_spans)  # ReDial's "Title (YYYY)" spans


def test_mentions_are_masked_where_the_task_says():
    from crsbench_plugins.ecr.emotion import mask_mentions
    from crsbench_tasks.inspired.task import InspiredTask
    from crsbench_tasks.redial.task import RedialTask

    assert mask_mentions("Kill Bill (2003) was great", RedialTask().mention_spans("Kill Bill (2003) was great")) \
        == "movie  was great"  # as before: the mask keeps the space that followed
    assert mask_mentions("abcdef", [(4, 6), (0, 2), (1, 3)], "X") == "XcdX"  # sorted, overlaps dropped
    inspired = InspiredTask()
    name = next(n for n in inspired.item_names.values() if " " in n and len(n) > 8)
    text = f"I watched {name} last week"
    assert mask_mentions(text, inspired.mention_spans(text)) == "I watched movie  last week"
    assert inspired.mention_spans("nothing to see here") == []
    # a masked title carries no cue ("love"); without the task's spans it does
    spans = RedialTask().mention_spans
    assert LexiconAnnotator(mention_spans=spans).scores("Love Actually (2003)")["like"] == 0
    assert LexiconAnnotator().scores("Love Actually (2003)")["like"] > 0


@pytest.fixture(scope="module")
def encoder():
    return get_encoder(num_threads=1)


@pytest.fixture(scope="module")
def train_texts():
    from crsbench_tasks.redial.task import RedialTask

    return seeker_utterances(RedialTask().load().splits["train"])


# -- the lexicon annotator -------------------------------------------------------------------
@pytest.mark.parametrize("text, label", [
    ("Thanks!", "grateful"), ("thank you so much for the help", "grateful"), ("I appreciate it", "grateful"),
    ("What is it about?", "curious"), ("Any suggestions", "curious"), ("Have you seen Jaws (1975)?", "curious"),
    ("I hated it", "negative"), ("I didn't like it", "negative"), ("That was so boring", "negative"),
    ("I love horror movies", "like"), ("My favorite movie is Heat (1995)", "like"),
    ("Yes that sounds good", "agreement"), ("ok I will check it out", "agreement"),
    ("Wow, I had no idea", "surprise"), ("I used to watch that all the time", "nostalgia"),
    ("haha", "happy"), ("I have seen that one", "neutral"), ("Insidious (2011)", "neutral"),
])
def test_lexicon_top_label(lexicon, text, label):
    probs = lexicon.annotate([text])[0]
    assert top_label(probs) == label, (text, keep_labels(probs))


def test_lexicon_multi_label_and_domain_words(lexicon):
    kept = dict(keep_labels(lexicon.annotate(["I loved it as a kid"])[0]))
    assert set(kept) == {"like", "nostalgia"}
    # movie-domain words are not feelings, titles carry no cue, negated memory is not nostalgia
    for text in ["I like scary movies", "I really enjoy horror movies", "Kill Bill (2003) was great"]:
        assert "negative" not in dict(keep_labels(lexicon.annotate([text])[0])), text
    assert "nostalgia" not in dict(keep_labels(lexicon.annotate(["I don't remember it"])[0]))
    assert top_label(lexicon.annotate(["No, I haven't seen it"])[0]) == "neutral"


def test_probabilities_sum_to_one(lexicon, train_texts):
    for probs in lexicon.annotate(train_texts[:500] + ["", "!!!", "?"]):
        assert tuple(probs) == EMOTIONS
        assert all(p >= 0 for p in probs.values())
        assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-9)


def test_keep_labels():
    probs = {"like": 0.5, "happy": 0.3, "curious": 0.15, "neutral": 0.05}
    assert keep_labels(probs) == [("like", 0.5), ("happy", 0.3)]
    assert keep_labels(probs, max_labels=3) == [("like", 0.5), ("happy", 0.3), ("curious", 0.15)]
    assert keep_labels(probs, beta=0.4) == [("like", 0.5)]
    assert keep_labels({"like": 0.1, "neutral": 0.9}) == [("neutral", 0.9)]  # strictly above beta
    assert keep_labels({label: 1 / 9 for label in EMOTIONS}, beta=0.2) == []
    tie = keep_labels({"happy": 0.45, "like": 0.45, "neutral": 0.1})
    assert [label for label, _ in tie] == ["like", "happy"]  # ties: EMOTIONS order
    renorm = keep_labels(probs, renormalize=True)
    assert math.isclose(sum(p for _, p in renorm), 1.0) and renorm[0] == ("like", 0.5 / 0.8)


def test_label_distribution(lexicon):
    dist = label_distribution(lexicon.annotate(["Thanks!", "What is it about?", "I hated it", "hello"]))
    assert dist["n"] == 4 and math.isclose(sum(dist["top1"].values()), 1.0)
    assert dist["top1"]["grateful"] == 0.25 and 1 <= dist["mean_kept_labels"] <= 2


# -- pluggable annotators --------------------------------------------------------------------
class FakeLLM:
    """Stands in for an LLM-judge annotator: any object with annotate(texts)."""

    name = "fake-llm"

    def __init__(self):
        self.calls = 0

    def annotate(self, texts):
        self.calls += 1
        return [{"curious": 2.0, "like": 2.0} if "?" in t else {"happy": 1.0} for t in texts]


def test_make_annotator_registry_and_hook():
    assert isinstance(make_annotator(), LexiconAnnotator)
    assert make_annotator("lexicon", sharpness=2.0).sharpness == 2.0
    with pytest.raises(KeyError, match="llm"):
        make_annotator("llm")
    llm = make_annotator("llm", annotator=FakeLLM())
    assert isinstance(llm, CallableAnnotator) and llm.name == "fake-llm"
    out = llm.annotate(["any more?", "great"])
    assert out[0]["curious"] == out[0]["like"] == 0.5 and out[1]["happy"] == 1.0 and tuple(out[1]) == EMOTIONS
    assert make_annotator(FakeLLM()).name == "fake-llm"
    register_annotator("fake", lambda **options: FakeLLM())
    try:
        assert make_annotator("fake").annotate(["x"])[0]["happy"] == 1.0
    finally:
        from crsbench_plugins.ecr import emotion

        emotion.ANNOTATORS.pop("fake")


def test_annotator_outputs_are_checked():
    class Bad(Annotator):
        name = "bad"

        def __init__(self, out):
            self.out = out

        def annotate(self, texts):
            return self.out

    with pytest.raises(ValueError, match="unknown emotion"):
        CallableAnnotator(Bad([{"angry": 1.0}])).annotate(["x"])
    with pytest.raises(ValueError, match="returned 2 results for 1"):
        CallableAnnotator(Bad([{}, {}])).annotate(["x"])
    with pytest.raises(ValueError, match=">= 0"):
        normalize_probs({"like": -0.1})
    assert normalize_probs({})["neutral"] == 1.0
    with pytest.raises(TypeError):
        make_annotator(object())


def test_annotate_samples_with_any_annotator(lexicon):
    samples = [
        {"context": ["Hi", "hello, what do you like?", "I love comedies"], "context_roles": ["seeker", "recommender", "seeker"]},
        {"context": [], "context_roles": []},
        {"context": ["hey"], "context_roles": ["recommender"]},
    ]
    out = annotate_samples(samples, lexicon)
    assert [len(x) for x in out] == [2, 0, 0]
    assert top_label(out[0][1]) == "like" and out[0][0] == lexicon.annotate(["Hi"])[0]
    fake = FakeLLM()
    assert annotate_samples(samples * 3, make_annotator(fake))[0][0]["happy"] == 1.0
    assert fake.calls == 1  # every distinct utterance once, in one call


# -- the text encoder ------------------------------------------------------------------------
def test_minilm_embeddings(encoder):
    assert (minilm_dir() / "model.safetensors").is_file()
    emb = encoder.encode(["I love horror movies", "I enjoy scary films", "The invoice is attached", ""])
    assert emb.shape == (4, 384) and emb.dtype.is_floating_point
    assert all(math.isclose(n, 1.0, abs_tol=1e-5) for n in emb.norm(dim=1).tolist())
    related, unrelated = (emb[0] @ emb[1]).item(), (emb[0] @ emb[2]).item()
    print(f"cos(horror, scary films) = {related:.3f}; cos(horror, invoice) = {unrelated:.3f}")
    assert related > unrelated + 0.3
    # batching by length does not change an embedding
    alone = encoder.encode(["I enjoy scary films"])
    assert (alone[0] - emb[1]).abs().max().item() < 1e-5
    assert encoder.encode([]).shape == (0, 384)


def test_cls_pooling_and_options(encoder):
    cls = TextEncoder(pooling="cls", num_threads=1)
    cls._tokenizer, cls._model = encoder.load_model()  # same weights, no second load
    a, b = cls.encode(["I love horror movies"]), encoder.encode(["I love horror movies"])
    assert a.shape == (1, 384) and (a - b).abs().max().item() > 1e-3
    assert cls.cache_id != encoder.cache_id
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder(pooling="max")


def test_embedding_cache_hit(tmp_path, encoder, monkeypatch):
    cache = EmbeddingCache(encoder, cache_dir=tmp_path)
    texts = ["I love horror movies", "any comedies?", "thanks!"]
    first = cache.embed(texts)
    assert cache.misses == 1 and cache.hits == 0 and cache.encoded == 3 and cache.path(texts).is_file()

    def fail(*args, **kwargs):
        raise AssertionError("encoded again despite the cache")

    monkeypatch.setattr(encoder, "encode", fail)
    again = EmbeddingCache(encoder, cache_dir=tmp_path)  # a second run: a new cache object
    second = again.embed(texts)
    assert again.hits == 1 and again.misses == 0
    assert (first - second).abs().max().item() == 0
    assert cache.path(texts) != cache.path(texts[::-1]) != cache.path(texts[:2])
    # another list of texts already seen: served from memory, nothing encoded
    assert (again.embed(texts[:2]) - first[:2]).abs().max().item() == 0 and again.encoded == 0
    with pytest.raises(AssertionError, match="encoded again"):
        again.embed(["a text never seen"])
    # a damaged file is recomputed, not trusted
    monkeypatch.undo()
    cache.path(texts).write_bytes(b"not safetensors")
    assert (EmbeddingCache(encoder, cache_dir=tmp_path).embed(texts) - first).abs().max().item() < 1e-6


# -- the classifier --------------------------------------------------------------------------
def _fit(encoder, texts, cache_dir, seed=0, **kwargs):
    clf = EmotionClassifier(encoder=encoder, seed=seed, cache_dir=cache_dir, **kwargs)
    report = clf.fit(texts, n_train=int(0.8 * len(texts)), n_heldout=len(texts) - int(0.8 * len(texts)))
    return clf, report


@pytest.fixture(scope="module")
def fitted(encoder, train_texts):
    cache_dir = None  # the crsbench cache ($CRSBENCH_CACHE_DIR): encoded once, loaded on later runs
    texts = train_texts[:N_FAST]
    t0 = time.perf_counter()
    clf, report = _fit(encoder, texts, cache_dir)
    print(f"\nencoding + training on {len(texts)} utterances: {time.perf_counter() - t0:.1f} s {report['seconds']}")
    return clf, report, texts, cache_dir


def test_classifier_agrees_with_annotator(fitted):
    clf, report, texts, _ = fitted
    print(f"held-out top-1 agreement {report['top1']:.3f} vs majority label {report['majority_label']!r} "
          f"{report['majority_rate']:.3f}; soft CE {report['soft_ce']:.3f}, KL {report['kl']:.3f}, "
          f"kept-label Jaccard {report['kept_jaccard']:.3f} (n_train {report['n_train']}, n_heldout {report['n_heldout']})")
    assert report["n_train"] == 1600 and report["n_heldout"] == 400
    assert report["top1"] > report["majority_rate"] + 0.2
    assert report["kl"] < 1.0 and report["soft_ce"] > report["kl"]
    labels = clf.annotate(texts[:50] + ["never seen before: thanks a lot!"])
    assert all(tuple(p) == EMOTIONS and math.isclose(sum(p.values()), 1.0, abs_tol=1e-5) for p in labels)
    # the annotator's own labels are kept for the texts it labelled (as the paper keeps its LLM labels)
    some = next(iter(clf.annotated))
    assert clf.annotate([some])[0] == clf.annotated[some]


def test_classifier_deterministic_and_save_load(fitted, encoder, tmp_path, monkeypatch):
    clf, report, texts, cache_dir = fitted
    again, report2 = _fit(encoder, texts, cache_dir)  # embeddings come from the cache now
    assert again.embeddings.hits == 1
    assert report2["top1"] == report["top1"] and report2["soft_ce"] == report["soft_ce"]
    probe = texts[-20:]
    assert (clf.predict_proba(probe) - again.predict_proba(probe)).abs().max().item() == 0
    other, _ = _fit(encoder, texts, cache_dir, seed=1)
    assert (clf.predict_proba(probe) - other.predict_proba(probe)).abs().max().item() > 0

    path = clf.save(tmp_path / "emotion.safetensors")
    loaded = EmotionClassifier.load(path, encoder=encoder, cache_dir=cache_dir)
    assert (loaded.predict_proba(probe) - clf.predict_proba(probe)).abs().max().item() == 0
    assert loaded.report == clf.report and loaded.annotated == clf.annotated
    assert loaded.annotate(texts[:30]) == clf.annotate(texts[:30])
    with pytest.raises(ValueError, match="trained on embeddings"):
        EmotionClassifier.load(path, encoder=TextEncoder(pooling="cls"))


def test_annotate_samples_with_classifier(fitted, encoder, train_texts):
    from crsbench_tasks.redial.task import RedialTask

    clf, _, texts, _ = fitted
    keep = set(texts)
    samples = [s for s in RedialTask().load().splits["train"].select(range(300))
               if all(t in keep for t, r in zip(s["context"], s["context_roles"]) if r == "seeker")]
    out = annotate_samples(samples, clf)
    assert len(out) == len(samples) > 0
    for sample, emotions in zip(samples, out):
        assert len(emotions) == sample["context_roles"].count("seeker")
        assert all(tuple(p) == EMOTIONS for p in emotions)


@pytest.mark.slow
def test_classifier_paper_size(encoder, train_texts, tmp_path):
    """The paper's setting: 5,082 annotated train-split seeker utterances (+1,000 held out)."""
    clf = EmotionClassifier(encoder=encoder, seed=0)
    report = clf.fit(train_texts)
    print(f"\n{report}")
    assert report["n_train"] == 5082 and report["n_heldout"] == 1000
    assert report["top1"] > report["majority_rate"] + 0.3
    dist = label_distribution(clf.annotate(train_texts))
    assert dist["n"] == len(train_texts) and 1.0 <= dist["mean_kept_labels"] <= 2.0
