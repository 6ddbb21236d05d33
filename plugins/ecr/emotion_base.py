"""The nine emotion labels of ECR (Zhang et al., RecSys 2024, section 3.1), what is done with a
distribution over them (beta and the two-label limit, top label, label shares), and the
contract of an annotator, the source of such distributions.

- an :class:`Annotator` produces a probability distribution over :data:`EMOTIONS` per text;
  any object with ``annotate(texts)`` (:class:`SupportsAnnotate`) can be wrapped in a
  :class:`CallableAnnotator`, which checks its outputs with :func:`normalize_probs`;
- :func:`keep_labels` applies beta and the two-label limit; :func:`label_distribution`
  summarises many annotations.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

EMOTIONS = ("like", "curious", "happy", "grateful", "negative", "neutral", "nostalgia", "agreement", "surprise")
BETA = 0.1
MAX_LABELS = 2
PAPER_N_ANNOTATED = 5082


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
