"""Built-in response-generation metrics.

A unit is one generated response. Unit fields: ``hyp`` and ``ref`` (lists of str) and
``hyp_items`` (item mentions found in each hypothesis). Tokens are the whitespace
``str.split()`` of the text as is (no lowercasing, no punctuation splitting), as UniCRS
and ECR evaluate; ``corpus_bleu`` and ROUGE use their libraries' own tokenisers.

Heavy libraries (nltk, sacrebleu, rouge_score, scipy) are imported inside ``prepare`` so
that registering the metrics stays fast.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np

from crsbench.metrics.base import GENERATION, MeanMetric, Metric, Units

MAX_ORDER = 4


def tokenize(text: str) -> list[str]:
    """Whitespace tokens, as every generation metric (and the rewards) count them."""
    return (text or "").split()


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of ``tokens`` in order (empty when there are fewer than n tokens)."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


# Per-response scores shared by several metrics (BLEU-1..4 from one nltk call, ROUGE-1/2/L
# from one rouge-score call) are computed once per set of responses. The cache holds one
# entry per family, keyed on the exact hypothesis and reference texts.
_CACHE: dict[str, tuple[tuple, tuple, np.ndarray]] = {}


def _shared(family: str, units: Units, compute: Callable[[list[str], list[str]], np.ndarray]) -> np.ndarray:
    hyps, refs = tuple(units["hyp"]), tuple(units["ref"])
    hit = _CACHE.get(family)
    if hit is not None and hit[0] == hyps and hit[1] == refs:
        return hit[2]
    result = compute(list(hyps), list(refs))
    _CACHE[family] = (hyps, refs, result)
    return result


# -- sentence BLEU-n (nltk) ------------------------------------------------------------
def sentence_bleu_all(hyps: list[str], refs: list[str]) -> np.ndarray:
    """(n_units, 4): nltk sentence BLEU with a single n-gram weight, n = 1..4, no smoothing."""
    from nltk.translate.bleu_score import sentence_bleu

    weights = [tuple(1.0 if k == n else 0.0 for k in range(MAX_ORDER)) for n in range(MAX_ORDER)]
    out = np.zeros((len(hyps), MAX_ORDER))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns on every zero n-gram overlap
        for i, (hyp, ref) in enumerate(zip(hyps, refs)):
            hyp_tok = tokenize(hyp)
            if not hyp_tok:
                continue  # an empty response scores 0
            try:
                out[i] = sentence_bleu([tokenize(ref)], hyp_tok, weights)
            except Exception:  # nltk edge cases (e.g. division by zero): score 0
                out[i] = 0.0
    # Without smoothing nltk scores a zero n-gram overlap as exp(log(sys.float_info.min)),
    # about 1e-308; report it as the 0 it stands for.
    out[out < 1e-300] = 0.0
    return out


class SentenceBLEU(MeanMetric):
    """BLEU-n as ECR / UniCRS report it: nltk's ``sentence_bleu([ref_tokens], hyp_tokens,
    weights)`` where ``weights`` puts all its mass on n-grams of order n (e.g. (0, 1, 0, 0)
    for BLEU-2), without smoothing, summed over responses and divided by the number of
    non-empty responses (their ``evaluate_conv.py``: ``bleu / sent_cnt``, ``sent_cnt``
    counting non-empty predictions). So BLEU-n is the mean over non-empty responses of
    brevity penalty x modified n-gram precision, in [0, 1]; an empty response is left out
    (its ``n`` counts non-empty responses), and a response with no matching n-gram of order
    n scores 0 (nltk returns ~1e-308 there). Tokens are whitespace-split.
    """

    kind = GENERATION

    def __init__(self, n: int):
        if not 1 <= n <= MAX_ORDER:
            raise ValueError(f"BLEU order must be 1..{MAX_ORDER}, got {n}")
        self.n = n
        self.name = f"bleu-{n}"
        self.description = (f"Mean sentence BLEU with {n}-gram precision only over non-empty responses "
                            "(nltk, no smoothing; ECR/UniCRS).")

    def values(self, units):
        scores = _shared("bleu", units, sentence_bleu_all)
        nonempty = np.array([bool(tokenize(h)) for h in units["hyp"]], dtype=bool)
        return scores[:, self.n - 1], nonempty


# -- corpus BLEU (sacrebleu) -------------------------------------------------------------
def _bleu_from_stats(stats: np.ndarray, order: int = MAX_ORDER) -> float:
    """sacrebleu's ``BLEU.compute_bleu`` with its defaults (exp smoothing, no effective
    order) on summed statistics ``[hyp_len, ref_len, correct_1..4, total_1..4]``, which may
    be weighted (non-integer) sums; sacrebleu's own function needs integer lengths."""
    sys_len, ref_len = float(stats[0]), float(stats[1])
    correct, total = stats[2:2 + order], stats[2 + order:2 + 2 * order]
    if sys_len < ref_len:
        bp = math.exp(1.0 - ref_len / sys_len) if sys_len > 0 else 0.0
    else:
        bp = 1.0
    if not np.any(correct):
        return 0.0
    log_sum, smooth = 0.0, 1.0
    for n in range(order):
        if total[n] == 0:
            return 0.0  # sacrebleu: precision 0 -> log = -9999999999 -> score 0
        if correct[n] == 0:
            smooth *= 2.0
            precision = 100.0 / (smooth * total[n])
        else:
            precision = 100.0 * correct[n] / total[n]
        log_sum += math.log(precision)
    return bp * math.exp(log_sum / order)


class CorpusBLEU(Metric):
    """sacrebleu corpus BLEU (default 13a tokenizer, exp smoothing, 0-100 scale), equal to
    ``sacrebleu.corpus_bleu(hyps, [refs]).score``.

    ``prepare`` extracts each response's sufficient statistics with sacrebleu (hypothesis
    and closest reference lengths, matching and total n-gram counts for n = 1..4);
    ``score`` sums them with the unit weights and computes BLEU from the sums, so the
    bootstrap resamples the corpus.
    """

    name = "corpus_bleu"
    kind = GENERATION
    description = "sacrebleu corpus BLEU (13a tokenizer, 0-100)."

    def prepare(self, units):
        from sacrebleu.metrics import BLEU

        bleu = BLEU(force=True)  # `force` only silences the "tokenized period" warning
        if bleu.max_ngram_order != MAX_ORDER or bleu.smooth_method != "exp" or bleu.effective_order:
            raise RuntimeError("sacrebleu's BLEU defaults changed; update CorpusBLEU")
        hyps, refs = list(units["hyp"]), list(units["ref"])
        if not hyps:
            return np.zeros((0, 2 + 2 * MAX_ORDER))
        return np.asarray(bleu._extract_corpus_statistics(hyps, [refs]), dtype=float)

    def score(self, prepared, weights):
        weights = np.asarray(weights, dtype=float)
        if prepared.shape[0] == 0 or weights.sum() <= 0:
            return float("nan")
        return float(_bleu_from_stats(weights @ prepared))


# -- distinct n-grams --------------------------------------------------------------------
def _ngram_incidence(hyps: list[str], n: int):
    """Sparse (n_distinct_ngrams x n_units) 0/1 matrix of which response contains which
    n-gram, per-unit n-gram totals and a per-unit non-empty flag."""
    from scipy import sparse

    vocab: dict[tuple[str, ...], int] = {}
    rows, cols = [], []
    totals = np.zeros(len(hyps))
    nonempty = np.zeros(len(hyps))
    for i, hyp in enumerate(hyps):
        tokens = tokenize(hyp)
        nonempty[i] = 1.0 if tokens else 0.0
        grams = ngrams(tokens, n)
        totals[i] = len(grams)
        for g in set(grams):
            rows.append(vocab.setdefault(g, len(vocab)))
            cols.append(i)
    incidence = sparse.csr_matrix((np.ones(len(rows)), (np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64))),
                                  shape=(len(vocab), len(hyps)))
    return incidence, totals, nonempty


class _Distinct(Metric):
    kind = GENERATION
    bootstrap_bias_correction = True  # duplicated responses in a replicate add no distinct n-grams

    def __init__(self, n: int):
        self.n = n

    def _denominator(self, totals: np.ndarray, nonempty: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, units):
        incidence, totals, nonempty = _ngram_incidence(list(units["hyp"]), self.n)
        return incidence, self._denominator(totals, nonempty)

    def score(self, prepared, weights):
        incidence, per_unit = prepared
        weights = np.asarray(weights, dtype=float)
        denom = float(per_unit @ weights)
        if denom <= 0:
            return float("nan")
        distinct = np.count_nonzero(incidence @ weights > 0)  # n-grams some resampled response has
        return distinct / denom


class Dist(_Distinct):
    """Dist-n as ECR / UniCRS define it: the number of distinct n-grams over all responses
    divided by the number of non-empty responses (not by the number of n-grams, so it is
    not a ratio in [0, 1] and grows with response length). Whitespace tokens. Under
    bootstrap weights an n-gram counts if some response with positive weight contains it,
    and a response counts ``weight`` times in the denominator.
    """

    def __init__(self, n: int):
        super().__init__(n)
        self.name = f"dist-{n}"
        self.description = f"Distinct {n}-grams over all responses / number of non-empty responses (ECR/UniCRS)."

    def _denominator(self, totals, nonempty):
        return nonempty


class DistinctRatio(_Distinct):
    """Distinct-n ratio (Li et al., 2016): the number of distinct n-grams over all responses
    divided by the total number of n-grams in all responses, in [0, 1]. Whitespace tokens.
    Under bootstrap weights an n-gram counts if some response with positive weight contains
    it, and a response's n-grams count ``weight`` times in the denominator.
    """

    def __init__(self, n: int):
        super().__init__(n)
        self.name = f"distinct_ratio-{n}"
        self.description = f"Distinct {n}-grams / total {n}-grams over all responses."

    def _denominator(self, totals, nonempty):
        return totals


# -- ROUGE (rouge-score) -----------------------------------------------------------------
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


# rouge-score's default tokeniser keeps only [a-z0-9] after lowercasing, so a reply in Greek,
# Cyrillic or Chinese has no tokens and scores 0 against itself. Ours lowercases and keeps
# runs of Unicode letters and digits (on ASCII text exactly the default's tokens), and makes
# each CJK / kana / hangul character a token of its own (those scripts do not separate words
# by spaces).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_ROUGE_TOKEN = None


class _UnicodeTokenizer:
    def tokenize(self, text: str) -> list[str]:
        global _ROUGE_TOKEN
        if _ROUGE_TOKEN is None:
            import re

            _ROUGE_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")
        return _ROUGE_TOKEN.findall((text or "").lower())


def _rouge_all(hyps: list[str], refs: list[str]) -> np.ndarray:
    """(n_units, 3): rouge-score F-measures for rouge1, rouge2, rougeL (no stemming), with
    :class:`_UnicodeTokenizer`."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=_UnicodeTokenizer())
    out = np.zeros((len(hyps), len(ROUGE_TYPES)))
    for i, (hyp, ref) in enumerate(zip(hyps, refs)):
        if not tokenize(hyp):
            continue  # an empty response scores 0
        scores = scorer.score(ref or "", hyp)
        out[i] = [scores[t].fmeasure for t in ROUGE_TYPES]
    return out


class Rouge(MeanMetric):
    """ROUGE-1 / ROUGE-2 / ROUGE-L F-measure from ``rouge_score.RougeScorer`` (no stemming),
    mean over responses, with a Unicode-aware tokeniser: lowercase runs of letters and digits
    of any script (the rouge-score default on ASCII text), each CJK character a token. An
    empty response scores 0.
    """

    kind = GENERATION

    def __init__(self, variant: str):
        self.index = {"1": 0, "2": 1, "l": 2}[variant.lower()]
        self.name = f"rouge-{variant.lower()}"
        what = "longest common subsequence" if self.index == 2 else f"{variant}-gram overlap"
        self.description = f"Mean ROUGE-{variant.upper()} F-measure ({what}; rouge-score, no stemming)."

    def values(self, units):
        scores = _shared("rouge", units, _rouge_all)
        return scores[:, self.index], np.ones(len(units), dtype=bool)


# -- simple per-response statistics --------------------------------------------------------
class ItemRatio(MeanMetric):
    """Share of responses that mention at least one item (``hyp_items > 0``)."""

    name = "item_ratio"
    kind = GENERATION
    description = "Share of responses that mention at least one item."

    def values(self, units):
        mentions = np.asarray(units["hyp_items"], dtype=float).reshape(-1)
        return (mentions > 0).astype(float), np.ones(len(mentions), dtype=bool)


class MeanLength(MeanMetric):
    """Mean number of whitespace tokens per response."""

    name = "mean_length"
    kind = GENERATION
    description = "Mean number of whitespace tokens per response."

    def values(self, units):
        lengths = np.array([len(tokenize(h)) for h in units["hyp"]], dtype=float)
        return lengths, np.ones(len(lengths), dtype=bool)


def all_metrics() -> list[Metric]:
    return [
        *(SentenceBLEU(n) for n in range(1, MAX_ORDER + 1)),
        CorpusBLEU(),
        *(Dist(n) for n in range(1, MAX_ORDER + 1)),
        *(DistinctRatio(n) for n in range(1, MAX_ORDER + 1)),
        *(Rouge(v) for v in ("1", "2", "L")),
        ItemRatio(),
        MeanLength(),
    ]
