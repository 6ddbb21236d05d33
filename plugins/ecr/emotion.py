"""Emotion labels of seeker utterances (ECR, Zhang et al., RecSys 2024, section 3.1).

The paper had an LLM label 5,082 seeker utterances with up to two of nine emotions, trained
a classifier on those labels and let it label every other utterance; an utterance keeps the
labels whose probability exceeds beta = 0.1. The LLM labels are not public, so here:

- an :class:`Annotator` produces a probability distribution over :data:`EMOTIONS` per text;
  the default, :class:`LexiconAnnotator`, is a documented rule/lexicon annotator built on
  VADER (works offline, deterministic). Any object with ``annotate(texts)`` can replace it
  (:func:`make_annotator`; the ``"llm"`` name is the hook point for an LLM-judge annotator);
- :class:`EmotionClassifier` is an MLP head over frozen :class:`TextEncoder` embeddings,
  trained on the annotator's soft labels for a seeded subset of train-split seeker
  utterances (5,082 by default, as in the paper), then used to label all of them;
- :func:`keep_labels` applies beta and the two-label limit; :func:`annotate_samples` gives,
  per sample, the emotion distribution of each seeker turn in its context.

``python -m crsbench_plugins.ecr.emotion`` prints the label distribution of the train-split
seeker utterances and the classifier's held-out agreement with the annotator.
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence, runtime_checkable

from crsbench_plugins.ecr.text_encoder import torch_threads

logger = logging.getLogger("crsbench.ecr")

EMOTIONS = ("like", "curious", "happy", "grateful", "negative", "neutral", "nostalgia", "agreement", "surprise")
BETA = 0.1
MAX_LABELS = 2
PAPER_N_ANNOTATED = 5082


# --------------------------------------------------------------------------------------------
# annotators
# --------------------------------------------------------------------------------------------
@runtime_checkable
class SupportsAnnotate(Protocol):
    """What :func:`make_annotator` accepts as an annotator: ``annotate(texts)`` returning one
    ``{label: probability}`` dict per text (labels from :data:`EMOTIONS`)."""

    def annotate(self, texts: Sequence[str]) -> list[dict[str, float]]: ...


class Annotator:
    """Base class: ``annotate(texts)`` -> one dict per text over all nine :data:`EMOTIONS`,
    probabilities >= 0 summing to 1. ``name``/``version`` identify the labels' provenance
    (they are recorded with a trained classifier)."""

    name = "base"
    version = "0"

    def annotate(self, texts: Sequence[str]) -> list[dict[str, float]]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r})"


def normalize_probs(probs: dict[str, float] | Sequence[float]) -> dict[str, float]:
    """Check one annotator output and return it over all nine labels, summing to 1.

    Accepts a dict (missing labels count 0; unknown labels or negative/non-finite values
    raise ``ValueError``) or a sequence of nine numbers in :data:`EMOTIONS` order. An
    all-zero output means "nothing detected" and becomes ``{"neutral": 1}``.
    """
    if isinstance(probs, dict):
        unknown = set(probs) - set(EMOTIONS)
        if unknown:
            raise ValueError(f"unknown emotion labels {sorted(unknown)}; expected a subset of {EMOTIONS}")
        values = [float(probs.get(label, 0.0)) for label in EMOTIONS]
    else:
        values = [float(v) for v in probs]
        if len(values) != len(EMOTIONS):
            raise ValueError(f"expected {len(EMOTIONS)} probabilities, got {len(values)}")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"emotion probabilities must be finite and >= 0, got {values}")
    total = sum(values)
    if total <= 0:
        return {label: float(label == "neutral") for label in EMOTIONS}
    return {label: v / total for label, v in zip(EMOTIONS, values)}


class CallableAnnotator(Annotator):
    """Wraps any object with ``annotate(texts)`` (e.g. an LLM-judge annotator): checks the
    number of outputs and normalises each with :func:`normalize_probs`."""

    def __init__(self, inner: SupportsAnnotate, name: str | None = None):
        if not callable(getattr(inner, "annotate", None)):
            raise TypeError(f"{inner!r} has no annotate(texts) method")
        self.inner = inner
        self.name = name or getattr(inner, "name", None) or type(inner).__name__
        self.version = str(getattr(inner, "version", "0"))

    def annotate(self, texts: Sequence[str]) -> list[dict[str, float]]:
        texts = list(texts)
        out = list(self.inner.annotate(texts))
        if len(out) != len(texts):
            raise ValueError(f"annotator {self.name!r} returned {len(out)} results for {len(texts)} texts")
        return [normalize_probs(p) for p in out]


# --- the rule/lexicon annotator -------------------------------------------------------------
# Cue table: label -> [(regex on the lower-cased, title-masked text, weight)]. A label's cue
# score is the sum of the weights of the patterns that match (each pattern counts once),
# capped at CUE_CAP. Patterns under NEGATED_* are removed from the text before the cues run.
CUE_CAP = 2.0
_NEG = r"(?:don'?t|do not|didn'?t|did not|doesn'?t|does not|never|not|can'?t|cannot|wasn'?t|isn'?t)"
_ADV = (r"(?:really |also |just |do |absolutely |still |totally |definitely |actually |truly |kind of |kinda |usually "
        r"|generally |mostly |normally |always |tend to |so |that |too |very |much |all that )*")

CUES: dict[str, list[tuple[str, float]]] = {
    "like": [
        (rf"\b(?:i|we)(?:'m| am)? {_ADV}(?:like|liked|likes|love|loved|loves|adore|adored|enjoy|enjoyed|enjoying|dig|prefer)\b", 1.2),
        (r"\bfavou?rit|\b(?:big |huge )?fan of\b|\b(?:i'?m|i am) (?:a )?(?:big |huge )?fan\b", 1.0),
        (r"\b(?:i'?m|i am) (?:really |very |big )?into\b|\bmy (?:kind of|type of|style|thing)\b", 0.8),
        (r"\blov(?:e|ed|es|ing)\b", 0.6),
        (r"\b(?:was|is|are|were|'s) (?:a |an )?(?:really |so |very |pretty |such a |an? )*(?:good|great|awesome|amazing"
         r"|excellent|fantastic|funny|hilarious|brilliant|cool|fun)\b", 0.5),
    ],
    "curious": [
        (r"\?", 1.0),
        (r"^(?:what|how|which|who|where|when|why|is|are|do|does|did|have|has|can|could|would|any|anything)\b", 0.6),
        (r"\b(?:any|some|other) (?:more |other |good |great )?(?:suggestions?|recommendations?|ideas?|others?|options?)\b"
         r"|\banything (?:else|like|similar)\b", 0.8),
        (r"\b(?:can|could|would) you (?:please )?(?:recommend|suggest|help|find|tell|think)\b"
         r"|\bdo you (?:know|have|think|recommend|suggest)\b", 0.8),
        (r"\bi (?:want|need)\b|\blooking for\b|\bsearching for\b|\bin the mood for\b|\bwhat about\b|\bhow about\b|\bi wonder\b|\bcurious\b"
         r"|\bwhat(?:'s| is) it about\b|\bsuggest(?:ion)?s?\b|\brecommend|\bsimilar to\b", 0.6),
    ],
    "happy": [
        (r"\b(?:great|awesome|amazing|wonderful|fantastic|excellent|perfect|glad|happy|excited|yay|fun|cool|nice"
         r"|lovely|hilarious|ha(?:ha)+|he(?:he)+|lol|lmao)\b|[:;]-?[)d]\B|!{2,}", 0.6),
        (r"\bcan'?t wait\b|\blooking forward\b|\bmade my day\b|\bperfect\b", 0.6),
    ],
    "grateful": [
        (r"\bthanks?\b|\bthank (?:you|u)\b|\bthx\b|\bty\b|\bappreciate(?:d|s)?\b|\bgrateful\b|\bthankful\b"
         r"|\bsaved my life\b|\b(?:very |so |really )?helpful\b|\byou(?:'ve| have) been (?:a |very |so )*(?:great |big )?help\b",
         1.6),
    ],
    "negative": [
        (r"\bhat(?:e|ed|es|ing)\b|\bdislik(?:e|ed|es)\b|\bcan'?t stand\b", 1.2),
        (rf"\b{_NEG} {_ADV}(?:like|liked|love|loved|enjoy|enjoyed|care for|cared for|into|a (?:big |huge )?fan)\b"
         r"|\bnot (?:really |quite )?my (?:style|thing|type|cup of tea|kind)\b|\bnot a (?:big |huge )?(?:[\w-]+ ){0,3}fan\b"
         r"|\b(?:couldn'?t|could not|can'?t|cannot) get into\b", 1.2),
        (r"\bboring\b|\bbored\b|\bterrible\b|\bawful\b|\bworst\b|\bsucks?\b|\bmeh\b|\bugh\b|\bannoying\b|\bstupid\b"
         r"|\boverrated\b|\bdisappoint\w*|\bwaste of\b|\bhorrible\b|\bdumb\b|\bcheesy\b", 1.0),
        (r"\btoo (?:scary|violent|gory|long|slow|sad|dark|creepy|much|bloody|intense|childish|cheesy)\b"
         r"|\b(?:not|wasn'?t|isn'?t|weren'?t|aren'?t) (?:as |that |very |so |too |really |all that )?"
         r"(?:good|great|interesting|funny|impressed)\b|\bsad\b", 0.8),
        (r"\baverage\b|\bmediocre\b|\bso-so\b|\bjust (?:ok|okay|alright)\b|\bnot for me\b", 0.6),
    ],
    "nostalgia": [
        (r"\bas a (?:kid|child|teen(?:ager)?|youngster)\b|\bchildhood\b|\bused to\b|\bgrowing up\b|\bgrew up\b"
         r"|\bremember\w*|\bremind(?:s|ed)? me\b|\bback in the day\b|\bback then\b|\bnostalgi\w*"
         r"|\bwhen i was (?:young|younger|little|small|a kid|a child|a teen\w*|in (?:high |grade )?school)\b"
         r"|\byears ago\b|\bold[- ]school\b|\boldies\b|\bclassics?\b|\b(?:19)?[5-9]0'?s\b|\bthe good old\b", 1.0),
        (r"\bold(?:er)?\b|\bas a kid\b|\bkids?\b.*\b(?:loved|watched)\b", 0.5),
    ],
    "agreement": [
        (r"^\W*(?:yes|yeah|yea|yep|yup|sure|ok|okay|k|alright|all right|absolutely|definitely|of course|agreed|exactly"
         r"|true|right|same|me too|indeed|certainly)\b", 1.2),
        (r"\bsounds? (?:really |very |so |pretty |quite )?(?:good|great|fun|interesting|cool|nice|perfect|awesome|like a plan|amazing|fantastic)\b"
         r"|\bi agree\b|\bagree\b|\bthat works\b|\bgood (?:idea|choice|call|pick|one|suggestion)s?\b|\bme too\b"
         r"|\b(?:i'?ll|i will|i'?m going to|gonna) (?:definitely |have to |surely |probably |def )*(?:check|watch|give|look|add|try|see|rent)\b"
         r"|\bwill do\b|\bon my list\b|\b(?:take|have) a look\b|\bgive (?:it|that|them) a (?:shot|try|go|watch)\b|\bfor sure\b", 1.0),
    ],
    "surprise": [
        (r"\bw(?:o)+w\b|\bwhoa\b|\bwoah\b|\bomg\b|\boh my\b|\bno way\b|\breally\s*\?|\bseriously\s*\?"
         r"|\b(?:didn'?t|did not|never) (?:know|realize|realise|knew)\b|\bhad no idea\b|\bsurpris\w*"
         r"|\bcan'?t believe\b|\bunexpected\w*|\bshocked\b|\bout of nowhere\b", 1.2),
        (r"!", 0.15),
        (r"!.*!", 0.15),
    ],
}
# Phrases that look like a cue but are not one, rewritten before the cues run:
# (pattern, replacement).
NOT_CUES = [
    (r"\b(?:don'?t|do not|can'?t|cannot|barely|not|didn'?t|did not|doesn'?t|hardly) (?:really |even )?(?:remember|recall)\w*",
     " "),
    (r"\b(?:i'?d|i would) (?:really )?like\b", " i want "),  # a request (curious), not liking
    (r"\b(?:would you|you'?d|you would) like\b", " "),
    (r"\b(?:movies?|something|films?|ones?|any|anything|shows?|stuff) (?:like|similar to)\b", " similar to "),
]

# VADER scores the words of a movie domain as feelings: "I love horror movies" is not
# negative, "any comedies?" is not happy, "No, I haven't seen it" is not negative.
# These words are set to 0 in the annotator's copy of the VADER lexicon.
VADER_NEUTRAL_WORDS = (
    "horror", "horrors", "scary", "scare", "scared", "killer", "killers", "kill", "kills", "killing", "war", "wars",
    "crime", "dead", "death", "die", "evil", "ghost", "haunted", "fear", "terror", "terrifying", "violent",
    "violence", "bloody", "murder", "fight", "fights", "disaster", "scream", "attack", "revenge", "criminal",
    "prison", "destroy", "danger", "dangerous", "mad", "hell", "devil", "battle", "gun", "hunger", "shock",
    "shocking", "thriller", "thrillers", "comedy", "comedies", "romance", "romantic", "drama", "joker",
    "like", "help", "please", "recommend", "yes", "no", "sure", "okay", "ok", "want", "kind", "free", "hope",
    "sorry", "miss", "lost", "trouble", "pretty", "well", "fine", "interesting",
)
# Item mentions are masked before the rules read a text, so "Kill Bill (2003) was great"
# carries no "kill" cue. The task says where its mentions are (Task.mention_spans: ReDial's
# "Title (YYYY)", INSPIRED's catalogue titles); the annotator knows no spelling of its own.
def mask_mentions(text: str, spans, mask: str = "movie ") -> str:
    """``text`` with each ``(start, end)`` span replaced by ``mask`` (overlaps: the first wins)."""
    out, last = [], 0
    for start, end in sorted(spans):
        if start < last:
            continue
        out += [text[last:start], mask]
        last = end
    out.append(text[last:])
    return "".join(out)


class LexiconAnnotator(Annotator):
    """Rule/lexicon annotator (the offline default). For each text:

    1. the task's item mentions (``mention_spans``) are masked; the text is lower-cased and the
       phrases in :data:`NOT_CUES` rewritten (negated "remember" dropped, "I'd like" read as
       "I want", "movies like X" as "movies similar to X");
    2. each label's cue score is the sum of the weights of its :data:`CUES` patterns that
       match, capped at ``CUE_CAP``;
    3. VADER (domain-neutralised lexicon, :data:`VADER_NEUTRAL_WORDS`) adds
       ``vader_weight * compound`` to *happy* when compound > 0.05 and
       ``vader_weight * |compound|`` to *negative* when compound < -0.05;
    4. *negative* cues cancel the *like* and *happy* scores they contradict ("I didn't like
       it" matches "like" too): like and happy are reduced by the negative cue score;
    5. *neutral* (the fallback) scores ``max(0, 1 - sum of the other scores) + neutral_floor``;
    6. probabilities are the scores plus ``smoothing``, raised to ``sharpness`` and
       normalised to sum 1 (a softmax over log-scores with temperature 1/sharpness).
    """

    name = "lexicon"
    version = "1"

    def __init__(self, vader_weight: float = 1.2, neutral_floor: float = 0.1, smoothing: float = 0.02,
                 sharpness: float = 1.5, mention_spans: Callable[[str], Sequence[tuple[int, int]]] | None = None):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.vader = SentimentIntensityAnalyzer()
        self.vader.lexicon = dict(self.vader.lexicon)
        for word in VADER_NEUTRAL_WORDS:
            self.vader.lexicon.pop(word, None)
        self.vader_weight = vader_weight
        self.neutral_floor = neutral_floor
        self.smoothing = smoothing
        self.sharpness = sharpness
        self.mention_spans = mention_spans  # the task's (TaskData.mention_spans); None: nothing is masked
        self._cues = {label: [(re.compile(p), w) for p, w in cues] for label, cues in CUES.items()}
        self._not_cues = [(re.compile(p), repl) for p, repl in NOT_CUES]

    def scores(self, text: str) -> dict[str, float]:
        """The un-normalised rule scores of one text (steps 1-5)."""
        text = "" if text is None else str(text)
        masked = mask_mentions(text, self.mention_spans(text)) if self.mention_spans else text
        low = " ".join(masked.lower().replace("’", "'").split())
        for pattern, repl in self._not_cues:
            low = pattern.sub(repl, low)
        scores = dict.fromkeys(EMOTIONS, 0.0)
        for label, cues in self._cues.items():
            scores[label] = min(CUE_CAP, sum(w for pattern, w in cues if pattern.search(low)))
        compound = self.vader.polarity_scores(masked)["compound"]
        if compound > 0.05:
            scores["happy"] += self.vader_weight * compound
        elif compound < -0.05:
            scores["negative"] += self.vader_weight * -compound
        if scores["negative"] > 0:
            scores["like"] = max(0.0, scores["like"] - scores["negative"])
            scores["happy"] = max(0.0, scores["happy"] - scores["negative"])
        other = sum(v for label, v in scores.items() if label != "neutral")
        scores["neutral"] = max(0.0, 1.0 - other) + self.neutral_floor
        return scores

    def probs(self, text: str) -> dict[str, float]:
        scores = self.scores(text)
        raw = {label: (scores[label] + self.smoothing) ** self.sharpness for label in EMOTIONS}
        total = sum(raw.values())
        return {label: v / total for label, v in raw.items()}

    def annotate(self, texts: Sequence[str]) -> list[dict[str, float]]:
        return [self.probs(t) for t in texts]


# --- the annotator registry ----------------------------------------------------------------
ANNOTATORS: dict[str, Callable[..., Any]] = {"lexicon": LexiconAnnotator}


def register_annotator(name: str, factory: Callable[..., Any]) -> None:
    """Make ``make_annotator(name, **options)`` call ``factory(**options)``; the factory
    returns anything with ``annotate(texts)``. This is how an LLM-judge annotator plugs in:
    ``register_annotator("llm", lambda **o: MyLLMAnnotator(judge, **o))``."""
    ANNOTATORS[name] = factory


def make_annotator(name: str | SupportsAnnotate = "lexicon", **options) -> Annotator:
    """An :class:`Annotator` by registry name, or wrapping a given annotator object.

    - ``make_annotator("lexicon", sharpness=2.0)``: the rule annotator with options;
    - ``make_annotator(obj)``: any object with ``annotate(texts)`` (outputs are checked and
      normalised by :class:`CallableAnnotator`);
    - ``make_annotator("llm", annotator=obj)``: the hook point for the LLM annotator; ``obj``
      has ``annotate(texts)`` (e.g. one that prompts an LLM judge with the nine labels and
      parses up to two labels with probabilities). Without ``annotator=`` the name must have
      been registered with :func:`register_annotator`.
    """
    if not isinstance(name, str):
        return name if isinstance(name, Annotator) and not options else CallableAnnotator(name, **options)
    if "annotator" in options:
        inner = options.pop("annotator")
        if options:
            raise TypeError(f"unexpected options with annotator=: {sorted(options)}")
        return CallableAnnotator(inner, name=getattr(inner, "name", None) or name)
    if name not in ANNOTATORS:
        hint = (" pass make_annotator('llm', annotator=obj) with an object that has annotate(texts), or "
                "register_annotator('llm', factory) first") if name == "llm" else ""
        raise KeyError(f"unknown emotion annotator {name!r} (registered: {sorted(ANNOTATORS)});{hint}")
    made = ANNOTATORS[name](**options)
    return made if isinstance(made, Annotator) else CallableAnnotator(made, name=name)


# --------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------
def keep_labels(probs: dict[str, float], beta: float = BETA, max_labels: int = MAX_LABELS,
                renormalize: bool = False) -> list[tuple[str, float]]:
    """The labels with probability > ``beta``, most probable first, at most ``max_labels``
    (ties broken by :data:`EMOTIONS` order). ``renormalize`` rescales the kept probabilities
    to sum 1. Returns ``[(label, prob), ...]`` (empty when no label exceeds beta)."""
    order = {label: i for i, label in enumerate(EMOTIONS)}
    kept = sorted(((label, float(p)) for label, p in probs.items() if p > beta),
                  key=lambda lp: (-lp[1], order.get(lp[0], len(order))))[:max_labels]
    if renormalize and kept:
        total = sum(p for _, p in kept)
        kept = [(label, p / total) for label, p in kept]
    return kept


def top_label(probs: dict[str, float]) -> str:
    return max(EMOTIONS, key=lambda label: (probs.get(label, 0.0), -EMOTIONS.index(label)))


def label_distribution(annotations: Iterable[dict[str, float]], beta: float = BETA,
                       max_labels: int = MAX_LABELS) -> dict[str, Any]:
    """Share of utterances whose top label / kept labels (beta, max_labels) include each
    emotion, the mean probability per emotion, and the mean number of kept labels."""
    annotations = list(annotations)
    n = max(1, len(annotations))
    top = Counter(top_label(p) for p in annotations)
    kept_sets = [keep_labels(p, beta, max_labels) for p in annotations]
    kept = Counter(label for labels in kept_sets for label, _ in labels)
    return {
        "n": len(annotations),
        "top1": {label: top[label] / n for label in EMOTIONS},
        "kept": {label: kept[label] / n for label in EMOTIONS},
        "mean_prob": {label: sum(p[label] for p in annotations) / n for label in EMOTIONS},
        "mean_kept_labels": sum(len(k) for k in kept_sets) / n,
    }


# --------------------------------------------------------------------------------------------
# the classifier
# --------------------------------------------------------------------------------------------
def seeker_utterances(samples) -> list[str]:
    """Distinct seeker utterances in the samples' contexts, in order of first appearance."""
    seen: dict[str, None] = {}
    for context, roles in _contexts(samples):
        for text, role in zip(context, roles):
            if role == "seeker":
                seen.setdefault(text, None)
    return list(seen)


def _contexts(samples):
    if hasattr(samples, "column_names"):  # datasets.Dataset: read the columns, not the rows
        return zip(samples["context"], samples["context_roles"])
    return ((s["context"], s["context_roles"]) for s in samples)


def _probs_tensor(annotations: Sequence[dict[str, float]]):
    import torch

    return torch.tensor([[float(p[label]) for label in EMOTIONS] for p in annotations], dtype=torch.float32)


class EmotionClassifier:
    """An MLP head (or a linear one, ``hidden=0``) over frozen sentence embeddings, trained
    with soft-label cross-entropy on an annotator's distributions; its softmax output is
    a distribution over :data:`EMOTIONS` like the annotator's (then :func:`keep_labels`).

    ``fit(texts)`` samples ``n_train`` distinct texts (seeded; 5,082 as in the paper), has
    the annotator label them plus ``n_heldout`` further texts, trains on the first and
    reports agreement on the second. Afterwards ``annotate(texts)`` labels any text: the
    annotator's own labels for the texts it labelled for training (``use_annotator_labels``,
    as the paper keeps its LLM labels), the classifier's for all others.

    Deterministic on the CPU for a given seed: parameter init, shuffling and dropout use
    a private RNG state (the global torch RNG is left as it was).
    """

    def __init__(self, encoder=None, annotator: str | SupportsAnnotate = "lexicon", hidden: int = 256,
                 dropout: float = 0.1, epochs: int = 30, lr: float = 1e-3, weight_decay: float = 1e-2,
                 batch_size: int = 64, seed: int = 0, cache_dir: str | None = None, use_annotator_labels: bool = True):
        from crsbench_plugins.ecr.text_encoder import EmbeddingCache, get_encoder

        self.encoder = encoder if encoder is not None else get_encoder()
        self.embeddings = EmbeddingCache(self.encoder, cache_dir)
        self.annotator = make_annotator(annotator) if annotator is not None else None
        self.hidden, self.dropout, self.epochs = int(hidden), float(dropout), int(epochs)
        self.lr, self.weight_decay, self.batch_size, self.seed = float(lr), float(weight_decay), int(batch_size), int(seed)
        self.use_annotator_labels = use_annotator_labels
        self.head = None
        self.annotated: dict[str, dict[str, float]] = {}
        self.report: dict[str, Any] = {}
        self.annotator_name = getattr(self.annotator, "name", None)

    # -- model --------------------------------------------------------------------------------
    def make_head(self, dim: int):
        import torch.nn as nn

        if self.hidden <= 0:
            return nn.Linear(dim, len(EMOTIONS))
        return nn.Sequential(nn.Linear(dim, self.hidden), nn.GELU(), nn.Dropout(self.dropout),
                             nn.Linear(self.hidden, len(EMOTIONS)))

    def embed(self, texts: Sequence[str], progress: bool = False):
        return self.embeddings.embed(list(texts), progress=progress)

    # -- training -----------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], n_train: int = PAPER_N_ANNOTATED, n_heldout: int = 1000,
            progress: bool = False) -> dict[str, Any]:
        """Annotate a seeded sample of ``texts`` and train on it; returns :attr:`report`.

        If fewer than ``n_train + n_heldout`` distinct texts exist, the held-out part is cut
        to a fifth of them (at least 1) and the rest trains.
        """
        import numpy as np
        import torch

        if self.annotator is None:
            raise ValueError("this classifier has no annotator to learn from")
        unique = list(dict.fromkeys("" if t is None else str(t) for t in texts))
        if len(unique) < 2:
            raise ValueError("need at least two distinct texts to train and evaluate")
        if n_train + n_heldout > len(unique):
            n_heldout = max(1, min(n_heldout, len(unique) // 5))
            n_train = min(n_train, len(unique) - n_heldout)
        perm = np.random.default_rng(self.seed).permutation(len(unique))
        train_texts = [unique[i] for i in perm[:n_train]]
        held_texts = [unique[i] for i in perm[n_train:n_train + n_heldout]]

        t0 = time.perf_counter()
        train_probs = self.annotator.annotate(train_texts)
        held_probs = self.annotator.annotate(held_texts)
        t_annotate = time.perf_counter() - t0
        # All distinct texts are encoded (and cached) at once: annotate(texts) afterwards
        # finds the same list in the embedding cache instead of encoding again.
        t0 = time.perf_counter()
        x = self.embed(unique, progress=progress)
        t_encode = time.perf_counter() - t0
        train_idx = torch.as_tensor(perm[:n_train], dtype=torch.long)
        held_idx = torch.as_tensor(perm[n_train:n_train + n_heldout], dtype=torch.long)
        x_train, x_held = x[train_idx], x[held_idx]
        y_train, y_held = _probs_tensor(train_probs), _probs_tensor(held_probs)

        t0 = time.perf_counter()
        # One thread: the head is tiny (threads only add overhead), and the result does
        # not depend on the machine's core count.
        with torch.random.fork_rng(devices=[]), torch_threads(1):
            torch.manual_seed(self.seed)
            self.head = self.make_head(x.shape[1])
            opt = torch.optim.AdamW(self.head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            gen = torch.Generator().manual_seed(self.seed)
            self.head.train()
            for _ in range(self.epochs):
                order = torch.randperm(n_train, generator=gen)
                for start in range(0, n_train, self.batch_size):
                    idx = order[start:start + self.batch_size]
                    logits = self.head(x_train[idx])
                    loss = -(y_train[idx] * torch.log_softmax(logits, -1)).sum(-1).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            self.head.eval()
        t_train = time.perf_counter() - t0

        self.annotated = dict(zip(train_texts, train_probs))
        self.annotator_name = self.annotator.name
        report = agreement(y_held, self.predict_embeddings(x_held))
        train_top = Counter(top_label(p) for p in train_probs)
        majority = train_top.most_common(1)[0][0]
        report.update({
            "annotator": self.annotator.name, "seed": self.seed, "n_texts": len(unique), "n_train": n_train,
            "n_heldout": len(held_texts), "majority_label": majority,
            "majority_rate": sum(top_label(p) == majority for p in held_probs) / max(1, len(held_probs)),
            "train_agreement_top1": agreement(y_train, self.predict_embeddings(x_train))["top1"],
            "seconds": {"annotate": round(t_annotate, 2), "encode": round(t_encode, 2), "train": round(t_train, 2)},
        })
        self.report = report
        return report

    # -- inference ----------------------------------------------------------------------------
    def predict_embeddings(self, x):
        """Class probabilities [N, 9] for embeddings [N, dim]."""
        import torch

        if self.head is None:
            raise RuntimeError("the emotion classifier is not trained; call fit() or load()")
        with torch.inference_mode(), torch_threads(1):
            return torch.softmax(self.head(x), -1)

    def predict_proba(self, texts: Sequence[str], progress: bool = False):
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            import torch

            return torch.empty(0, len(EMOTIONS))
        return self.predict_embeddings(self.embed(texts, progress=progress))

    def annotate(self, texts: Sequence[str], progress: bool = False) -> list[dict[str, float]]:
        """One distribution over :data:`EMOTIONS` per text (the Annotator interface)."""
        texts = ["" if t is None else str(t) for t in texts]
        unique = list(dict.fromkeys(texts))
        known = self.annotated if self.use_annotator_labels else {}
        if all(t in known for t in unique):
            return [dict(known[t]) for t in texts]
        # predict for every distinct text (not only the unknown ones), so the list matches
        # the one fit() embedded and the embedding cache hits
        table = {t: dict(zip(EMOTIONS, p)) for t, p in zip(unique, self.predict_proba(unique, progress).tolist())}
        return [dict(known[t]) if t in known else table[t] for t in texts]

    @property
    def name(self) -> str:
        return f"classifier({self.annotator_name})"

    # -- persistence --------------------------------------------------------------------------
    def _input_dim(self) -> int:
        first = self.head if self.hidden <= 0 else self.head[0]
        return int(first.in_features)

    def save(self, path: str | Path) -> Path:
        """One safetensors file: the head's weights; config, report and the annotator's
        training labels in the metadata."""
        from safetensors.torch import save_file

        if self.head is None:
            raise RuntimeError("nothing to save: the classifier is not trained")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()}
        meta = {
            "format": "crsbench-ecr-emotion-classifier/1", "emotions": json.dumps(EMOTIONS),
            "config": json.dumps({"hidden": self.hidden, "dropout": self.dropout, "epochs": self.epochs, "lr": self.lr,
                                  "weight_decay": self.weight_decay, "batch_size": self.batch_size, "seed": self.seed}),
            "input_dim": str(self._input_dim()), "encoder": self.encoder.cache_id, "annotator": str(self.annotator_name),
            "report": json.dumps(self.report), "annotated": json.dumps(self.annotated),
        }
        save_file(tensors, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path, encoder=None, cache_dir: str | None = None,
             use_annotator_labels: bool = True) -> "EmotionClassifier":
        """A trained classifier from :meth:`save`. ``encoder`` must match the one it was
        trained with (default: the shared MiniLM encoder); a mismatch raises ValueError."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "crsbench-ecr-emotion-classifier/1":
            raise ValueError(f"{path} is not a saved EmotionClassifier")
        if tuple(json.loads(meta["emotions"])) != EMOTIONS:
            raise ValueError(f"{path} was trained on other labels: {meta['emotions']}")
        config = json.loads(meta["config"])
        clf = cls(encoder=encoder, annotator=None, cache_dir=cache_dir, use_annotator_labels=use_annotator_labels,
                  **config)
        if clf.encoder.cache_id != meta["encoder"]:
            raise ValueError(f"{path} was trained on embeddings of {meta['encoder']}, not {clf.encoder.cache_id}")
        state = load_file(str(path))
        # files written before "input_dim" was recorded: the first layer's weight [out, in]
        dim = meta.get("input_dim") or state["weight" if "weight" in state else "0.weight"].shape[1]
        clf.head = clf.make_head(int(dim))
        clf.head.load_state_dict(state)
        clf.head.eval()
        clf.annotator_name = meta.get("annotator")
        clf.report = json.loads(meta.get("report", "{}"))
        clf.annotated = json.loads(meta.get("annotated", "{}"))
        return clf


def agreement(target, predicted) -> dict[str, float]:
    """How well predicted distributions [N, 9] match annotator distributions [N, 9]:
    top-1 accuracy, soft-label cross-entropy H(p, q) and mean KL(p || q) (nats), and the
    mean Jaccard overlap of the label sets :func:`keep_labels` keeps from each."""
    import torch

    eps = 1e-12
    q = predicted.clamp_min(eps)
    p = target
    ce = -(p * q.log()).sum(-1)
    kl = (p * (p.clamp_min(eps).log() - q.log())).sum(-1)
    top1 = (p.argmax(-1) == q.argmax(-1)).float()
    jac = []
    for pi, qi in zip(p.tolist(), q.tolist()):
        a = {label for label, _ in keep_labels(dict(zip(EMOTIONS, pi)))}
        b = {label for label, _ in keep_labels(dict(zip(EMOTIONS, qi)))}
        jac.append(len(a & b) / len(a | b) if a | b else 1.0)
    n = max(1, len(jac))
    target_top = p.argmax(-1)
    recall = {}
    for i, label in enumerate(EMOTIONS):
        rows = target_top == i
        if rows.any():
            recall[label] = round(top1[rows].mean().item(), 4)
    return {"top1": top1.mean().item() if len(jac) else float("nan"),
            "soft_ce": ce.mean().item() if len(jac) else float("nan"),
            "kl": kl.mean().item() if len(jac) else float("nan"),
            "annotator_entropy": (ce - kl).mean().item() if len(jac) else float("nan"),
            "kept_jaccard": sum(jac) / n, "top1_recall": recall}


def annotate_samples(samples, classifier: SupportsAnnotate, progress: bool = False) -> list[list[dict[str, float]]]:
    """Per sample, the emotion distribution of each seeker turn of its context, in context
    order (turns whose ``context_roles`` entry is "seeker"). ``classifier`` is a trained
    :class:`EmotionClassifier` or any annotator; each distinct utterance is labelled once."""
    contexts = list(_contexts(samples))
    unique = list(dict.fromkeys(t for context, roles in contexts for t, r in zip(context, roles) if r == "seeker"))
    if isinstance(classifier, EmotionClassifier):
        labels = classifier.annotate(unique, progress=progress)
    else:
        labels = list(classifier.annotate(unique))
    table = dict(zip(unique, labels))
    return [[table[t] for t, r in zip(context, roles) if r == "seeker"] for context, roles in contexts]


# --------------------------------------------------------------------------------------------
# python -m crsbench_plugins.ecr.emotion
# --------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m crsbench_plugins.ecr.emotion",
                                     description="Label distribution of a task's seeker utterances and the emotion "
                                                 "classifier's held-out agreement with the annotator.")
    parser.add_argument("--task", default="redial", help="a registered task (crsbench list tasks)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--annotator", default="lexicon")
    parser.add_argument("--n-train", type=int, default=PAPER_N_ANNOTATED)
    parser.add_argument("--n-heldout", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads for encoding (default: torch's)")
    parser.add_argument("--save", help="write the trained classifier here (.safetensors)")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args(argv)

    from crsbench.plugins import lookup  # any registered task, by name: no task module imported here

    task = lookup("tasks", args.task).obj()
    texts = seeker_utterances(task.load().splits[args.split])
    annotator = (make_annotator("lexicon", mention_spans=task.mention_spans) if args.annotator == "lexicon"
                 else make_annotator(args.annotator))
    t0 = time.perf_counter()
    dist = label_distribution(annotator.annotate(texts))
    t_annotate = time.perf_counter() - t0
    from crsbench_plugins.ecr.text_encoder import get_encoder

    encoder = get_encoder(num_threads=args.threads) if args.threads else get_encoder()
    clf = EmotionClassifier(encoder=encoder, annotator=annotator, seed=args.seed)
    report = clf.fit(texts, n_train=args.n_train, n_heldout=args.n_heldout, progress=True)
    t0 = time.perf_counter()
    clf_dist = label_distribution(clf.annotate(texts))
    t_label = time.perf_counter() - t0

    def row(name, d):
        return f"{name:<26}" + "".join(f"{100 * d[label]:>10.1f}" for label in EMOTIONS)

    print(f"{len(texts)} distinct seeker utterances in the {args.split} split; annotator {annotator.name} "
          f"({t_annotate:.1f} s)")
    print(f"{'% of utterances':<26}" + "".join(f"{label:>10}" for label in EMOTIONS))
    print(row("annotator top-1", dist["top1"]))
    print(row("annotator kept (b=0.1,<=2)", dist["kept"]))
    print(row("labelled top-1", clf_dist["top1"]))
    print(row("labelled kept", clf_dist["kept"]))
    print(f"mean kept labels: annotator {dist['mean_kept_labels']:.2f}, labelled {clf_dist['mean_kept_labels']:.2f}")
    print(f"classifier held-out agreement ({report['n_heldout']} texts, trained on {report['n_train']}): "
          f"top-1 {report['top1']:.3f} (majority label {report['majority_label']!r}: {report['majority_rate']:.3f}), "
          f"soft CE {report['soft_ce']:.3f}, KL {report['kl']:.3f}, kept-label Jaccard {report['kept_jaccard']:.3f}; "
          f"train top-1 {report['train_agreement_top1']:.3f}")
    print("held-out top-1 recall per annotator label: "
          + ", ".join(f"{label} {recall:.2f}" for label, recall in report["top1_recall"].items()))
    print(f"seconds: {report['seconds']}, labelling all {len(texts)}: {t_label:.1f}")
    out = {"split": args.split, "n_texts": len(texts), "annotator": dist, "labelled": clf_dist, "report": report}
    if args.save:
        clf.save(args.save)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
