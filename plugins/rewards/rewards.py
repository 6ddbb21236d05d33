"""Built-in rewards for RL-trained response generators.

Every reward maps ``(samples, responses)`` to one float per response, higher is better.
Definitions, options and defaults are documented in docs/rewards.md; the tests in
tests/test_rewards.py pin the exact values.

This module is imported when the plugin registers its rewards, so it must stay light:
nltk, torch and the emotion annotator are imported inside the methods that need them.
"""
from __future__ import annotations

import re
from typing import Callable

import numpy as np

from crsbench.errors import UserError
from crsbench.metrics.generation import MAX_ORDER, ngrams, sentence_bleu_all, tokenize
from crsbench.reward import Reward


def _check_lengths(reward: Reward, samples, responses) -> None:
    if len(samples) != len(responses):
        raise ValueError(f"reward {reward.name!r}: {len(samples)} samples but {len(responses)} responses")


def _unknown_options(reward: Reward, known: set[str]) -> None:
    extra = sorted(set(reward.options) - known)
    if extra:
        raise UserError(f"reward {reward.name!r}: unknown option(s) {', '.join(map(repr, extra))} "
                        f"(known: {', '.join(sorted(known)) or 'none'})")


# -- bleu ----------------------------------------------------------------------------------
class BleuReward(Reward):
    """Sentence BLEU of the response against the sample's reference ``response``, exactly as
    the ``bleu-n`` metrics compute it (nltk ``sentence_bleu``, whitespace tokens, all weight
    on n-grams of order n, no smoothing). Option ``n``: an order 1..4 or a list of orders
    whose BLEU-n values are averaged (default 2)."""

    name = "bleu"
    description = "Sentence BLEU-n vs the reference response (as the bleu-n metrics; option n, default 2)."

    def __init__(self, **options):
        super().__init__(**options)
        _unknown_options(self, {"n"})
        orders = options.get("n", 2)
        orders = [orders] if isinstance(orders, int) else list(orders)
        if not orders or any(not isinstance(n, int) or not 1 <= n <= MAX_ORDER for n in orders):
            raise UserError(f"reward 'bleu': option n must be an order 1..{MAX_ORDER} or a list of them, "
                            f"got {options.get('n')!r}")
        self.orders = orders

    def score(self, samples, responses):
        _check_lengths(self, samples, responses)
        refs = [s.get("response") or "" for s in samples]
        table = sentence_bleu_all(list(responses), refs)  # (N, 4)
        return [float(v) for v in table[:, [n - 1 for n in self.orders]].mean(axis=1)]


# -- distinct ------------------------------------------------------------------------------
class DistinctReward(Reward):
    """Distinct-n within one response: distinct n-grams / n-grams (whitespace tokens, as the
    metrics). A response that repeats itself scores low; one with fewer than n tokens (no
    n-gram at all) scores 0. Option ``n`` (default 2)."""

    name = "distinct"
    description = "Distinct n-grams / n-grams within the response (option n, default 2); 0 if shorter than n."

    def __init__(self, **options):
        super().__init__(**options)
        _unknown_options(self, {"n"})
        self.n = options.get("n", 2)
        if not isinstance(self.n, int) or self.n < 1:
            raise UserError(f"reward 'distinct': option n must be a positive integer, got {self.n!r}")

    def score(self, samples, responses):
        _check_lengths(self, samples, responses)
        out = []
        for response in responses:
            grams = ngrams(tokenize(response), self.n)
            out.append(len(set(grams)) / len(grams) if grams else 0.0)
        return out


# -- rec_hit -------------------------------------------------------------------------------
# A trailing "(1984)", "(1997 film)", "(film)", "(2004 American film)" is not said in chat.
_TITLE_SUFFIX = re.compile(r"\s*\((?:[^()]*\d{4}[^()]*|[^()]*\bfilm\b[^()]*)\)\s*$", re.IGNORECASE)


def bare_title(name: str) -> str:
    """``"Police Academy  (1984)"`` -> ``"Police Academy"``: whitespace collapsed, a trailing
    year / film disambiguation in parentheses removed."""
    name = " ".join(str(name).split())
    stripped = _TITLE_SUFFIX.sub("", name)
    return stripped or name


class RecHitReward(Reward):
    """1.0 if the response names one of the sample's ``targets``, else 0.0.

    Options (at least one): ``item_names`` ({item id: name}) matches each target's bare
    title (trailing year removed) as a whole phrase, case-insensitively, except that titles
    of at most ``exact_case_max_len`` characters (default 3: "It", "Up", "Her") must match
    with their case, so ordinary words do not count; ``find_items`` (callable text -> item
    ids, e.g. the task's ``find_items``) counts a hit if it finds a target. With both, either
    one finding a target is a hit."""

    name = "rec_hit"
    description = "1 if the response names a target movie (title without year, case-insensitive), else 0."

    def __init__(self, **options):
        super().__init__(**options)
        _unknown_options(self, {"item_names", "find_items", "exact_case_max_len"})
        names = options.get("item_names")
        self.find_items: Callable[[str], list[int]] | None = options.get("find_items")
        if names is None and self.find_items is None:
            raise UserError("reward 'rec_hit' needs option item_names ({item id: title}) or find_items (callable)")
        if self.find_items is not None and not callable(self.find_items):
            raise UserError("reward 'rec_hit': option find_items must be callable (text -> item ids)")
        self.item_names = {int(k): v for k, v in (names or {}).items()}  # JSON configs give str keys
        self.exact_case_max_len = int(options.get("exact_case_max_len", 3))
        self._patterns: dict[int, re.Pattern | None] = {}

    def _pattern(self, item: int) -> re.Pattern | None:
        if item not in self._patterns:
            name = self.item_names.get(item)
            title = bare_title(name) if name else ""
            if not title:
                self._patterns[item] = None
            else:
                words = r"\s+".join(re.escape(w) for w in title.split())
                flags = 0 if len(title) <= self.exact_case_max_len else re.IGNORECASE
                self._patterns[item] = re.compile(rf"(?<![0-9A-Za-z]){words}(?![0-9A-Za-z])", flags)
        return self._patterns[item]

    def hit(self, sample: dict, response: str) -> bool:
        targets = [int(t) for t in sample.get("targets") or []]
        if not targets or not response:
            return False
        for item in targets:
            pattern = self._pattern(item) if self.item_names else None
            if pattern is not None and pattern.search(response):
                return True
        if self.find_items is not None:
            return bool(set(map(int, self.find_items(response))) & set(targets))
        return False

    def score(self, samples, responses):
        _check_lengths(self, samples, responses)
        return [1.0 if self.hit(s, r) else 0.0 for s, r in zip(samples, responses)]


# -- emotion -------------------------------------------------------------------------------
MEASURES = ("tv", "cosine")


class EmotionReward(Reward):
    """Agreement between the response's emotion distribution and the seeker's.

    The annotator (option ``annotator``: an annotator name for the ECR plugin's
    ``make_annotator``, default ``"lexicon"`` (``LexiconAnnotator``), or any object with
    ``annotate(texts) -> [{label: prob}]``) labels the
    response and the last ``seeker_turns`` (default 2) seeker turns of the context; the
    seeker's distribution is the mean of theirs. Each distribution is normalised to sum 1.
    ``measure="tv"`` (default) scores 1 - total variation distance = 1 - 0.5 * sum|p - q|;
    ``measure="cosine"`` scores the cosine of the two vectors. Both lie in [0, 1]. The
    score is 0 when the context has no seeker turn or when either distribution is all zero
    (the annotator found no emotion)."""

    name = "emotion"
    description = "Agreement of the response's emotions with the seeker's last turns (1 - TV distance or cosine)."

    def __init__(self, **options):
        super().__init__(**options)
        _unknown_options(self, {"annotator", "seeker_turns", "measure"})
        self.seeker_turns = int(options.get("seeker_turns", 2))
        self.measure = options.get("measure", "tv")
        if self.measure not in MEASURES:
            raise UserError(f"reward 'emotion': option measure must be one of {', '.join(MEASURES)}, "
                            f"got {self.measure!r}")
        if self.seeker_turns < 1:
            raise UserError("reward 'emotion': option seeker_turns must be >= 1")
        self._annotator = options.get("annotator")

    @property
    def annotator(self):
        if self._annotator is None or isinstance(self._annotator, str):
            from crsbench_plugins.ecr.emotion import make_annotator

            self._annotator = make_annotator(self._annotator or "lexicon")
        return self._annotator

    def seeker_tail(self, sample: dict) -> list[str]:
        context = list(sample.get("context") or [])
        roles = list(sample.get("context_roles") or [])
        turns = [t for t, r in zip(context, roles) if r == "seeker"]
        return turns[-self.seeker_turns:]

    def agreement(self, p: np.ndarray, q: np.ndarray) -> float:
        if p.sum() <= 0 or q.sum() <= 0:
            return 0.0
        p, q = p / p.sum(), q / q.sum()
        if self.measure == "tv":
            return float(1.0 - 0.5 * np.abs(p - q).sum())
        return float(p @ q / (np.linalg.norm(p) * np.linalg.norm(q)))

    def score(self, samples, responses):
        _check_lengths(self, samples, responses)
        tails = [self.seeker_tail(s) for s in samples]
        texts = list(responses) + [t for tail in tails for t in tail]
        annotated = self.annotator.annotate(texts) if texts else []
        labels = sorted({label for dist in annotated for label in dist})
        index = {label: i for i, label in enumerate(labels)}

        def vector(dist: dict) -> np.ndarray:
            v = np.zeros(len(labels))
            for label, prob in dist.items():
                v[index[label]] = max(float(prob), 0.0)
            return v

        out, pos = [], len(responses)
        for i, tail in enumerate(tails):
            if not tail:
                out.append(0.0)
                continue
            seeker = np.mean([vector(annotated[pos + k]) for k in range(len(tail))], axis=0)
            pos += len(tail)
            out.append(self.agreement(vector(annotated[i]), seeker))
        return out


# -- length --------------------------------------------------------------------------------
class LengthReward(Reward):
    """A bonus for responses of a useful length, in whitespace tokens n.

    1.0 for ``min_len <= n <= max_len``; below, a linear ramp ``n / min_len`` (0 for an
    empty response); above, a linear fall ``1 - (n - max_len) / falloff`` floored at 0
    (``falloff`` defaults to ``max_len``, so 2 * max_len tokens score 0). Continuous and
    in [0, 1]. Defaults: min_len 5, max_len 30."""

    name = "length"
    description = "1 inside [min_len, max_len] tokens, linear ramps to 0 outside (defaults 5, 30)."

    def __init__(self, **options):
        super().__init__(**options)
        _unknown_options(self, {"min_len", "max_len", "falloff"})
        self.min_len = options.get("min_len", 5)
        self.max_len = options.get("max_len", 30)
        self.falloff = options.get("falloff", self.max_len)
        if not (0 <= self.min_len <= self.max_len) or self.max_len <= 0 or not self.falloff > 0:
            raise UserError(f"reward 'length': need 0 <= min_len <= max_len, max_len > 0 and falloff > 0 "
                            f"(got min_len={self.min_len}, max_len={self.max_len}, falloff={self.falloff})")

    def value(self, n: int) -> float:
        if n < self.min_len:
            return n / self.min_len
        if n <= self.max_len:
            return 1.0
        return max(0.0, 1.0 - (n - self.max_len) / self.falloff)

    def score(self, samples, responses):
        _check_lengths(self, samples, responses)
        return [float(self.value(len(tokenize(r)))) for r in responses]


# -- critic --------------------------------------------------------------------------------
class CriticReward(Reward):
    """A trained judge critic's predicted score for (context tail, response), in [0, 1].

    Options: ``critic`` (required): a loaded critic, e.g. ECR-RL's ``Critic`` (``train_critic``'s
    ``report.critic`` or ``Critic.load(path)``, gated with ``check_critic`` first), or any object
    with ``score(contexts, responses, head=, weights=, batch_size=)``; ``head``: a judge metric
    name or ``"combined"`` (default), the weighted mean of the heads with ``weights`` ({metric:
    weight}; default equal); ``batch_size`` (default 64). The critic is passed in, never loaded
    here, so this plugin imports no other plugin (ECR-RL imports it)."""

    name = "critic"
    description = "Trained critic's predicted judge score (one head or weighted 'combined'), in [0, 1]."

    def __init__(self, **options):
        super().__init__(**options)
        moved = sorted({"path", "encoder", "min_spearman"} & set(options))
        if moved:
            raise UserError(f"reward 'critic': option(s) {', '.join(moved)} are not read here; load and gate "
                            "the critic with crsbench_plugins.ecr_rl.critic (Critic.load(path, encoder=...), "
                            "check_critic(critic.report, min_spearman)) and pass it as option critic")
        _unknown_options(self, {"critic", "head", "weights", "batch_size"})
        if options.get("critic") is None:
            raise UserError("reward 'critic' needs option critic (a loaded critic, e.g. Critic.load(path))")
        self.head = options.get("head", "combined")
        self.weights = options.get("weights")
        self.critic = options["critic"]

    def score(self, samples, responses):
        _check_lengths(self, samples, responses)
        critic = self.critic
        contexts = [list(s.get("context") or []) for s in samples]
        values = critic.score(contexts, list(responses), head=self.head, weights=self.weights,
                              batch_size=int(self.options.get("batch_size", 64)))
        return [float(v) for v in values]


# -- judge ---------------------------------------------------------------------------------
class JudgeReward(Reward):
    """A registered judge's score of (context, response), scaled from 0-9 to [0, 1].

    Options: ``judge`` (a judge name or a spec ``{"name": ..., **options}``, required),
    ``rubric`` (a registered rubric name; default the judge's own), ``metric`` (one of the
    rubric's metrics, or ``"mean"`` of them; default ``"mean"``). A pair the judge fails on
    raises: a reward with holes would train on made-up zeros. Use a cheap judge (a learned
    one): it is called on every completion of every RL step."""

    name = "judge"
    description = "A judge's score of (context, response) for one rubric metric or their mean, in [0, 1]."

    def __init__(self, **options):
        super().__init__(**options)
        _unknown_options(self, {"judge", "rubric", "metric"})
        if not options.get("judge"):
            raise UserError("reward 'judge' needs option judge (a judge name or {name: ..., **options})")
        self.metric = options.get("metric", "mean")
        self._judge = None

    @property
    def judge(self):
        if self._judge is None:
            from crsbench.judge_eval import make_judge

            spec = self.options["judge"]
            spec = dict(spec) if isinstance(spec, dict) else {"name": spec}
            if self.options.get("rubric"):
                spec["rubric"] = self.options["rubric"]
            self._judge = make_judge(spec, cache=False)
            if self.metric != "mean" and self.metric not in self._judge.metrics:
                raise UserError(f"reward 'judge': metric {self.metric!r} is not one of the judge's "
                                f"({', '.join(self._judge.metrics)})")
        return self._judge

    def score(self, samples, responses):
        from crsbench.judge import JudgeInput

        _check_lengths(self, samples, responses)
        judge = self.judge
        items = [JudgeInput(list(s.get("context") or []), str(r), list(s.get("context_roles") or []) or None)
                 for s, r in zip(samples, responses)]
        out = []
        for item, sc in zip(items, judge.score(items)):
            if not sc.ok:
                raise ValueError(f"reward 'judge': {judge.key} failed on a pair: {sc.error}")
            values = sc.scores.values() if self.metric == "mean" else [sc.scores[self.metric]]
            out.append(float(np.mean(list(values))) / 9.0)
        return out


ALL_REWARDS = (BleuReward, DistinctReward, RecHitReward, EmotionReward, LengthReward, CriticReward, JudgeReward)

__all__ = [cls.__name__ for cls in ALL_REWARDS] + ["ALL_REWARDS", "bare_title"]
