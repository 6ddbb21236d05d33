"""From prediction records to metrics with CIs (``score_records``) and paired comparisons
(``compare_records``); the records are checked before anything is scored.

Prediction records (one JSON line per test sample) hold everything metrics need, so a
run can be re-scored later (``crsbench evaluate``) without the model; they are made by
:mod:`crsbench.predictions`, whose ``predict`` is importable from here as before.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from crsbench.bootstrap import draw_dialog_counts, paired_p_value, percentile_ci, replicate_scores
from crsbench.metrics.base import GENERATION, JUDGE, RECOMMENDATION, Units
from crsbench.predictions import predict  # noqa: F401
from crsbench.protocols import evaluated_ranks

FEEDBACK_VALUES = ("liked", "disliked", "unknown", None)  # a target's seeker feedback in a record


# -- scoring ---------------------------------------------------------------------------
def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _rank_ok(rank) -> bool:
    return rank is None or (_is_int(rank) and rank >= 1)


def record_problem(r) -> str | None:
    """What makes a prediction record unscorable, or None. Ranks are 1-based integers or None
    (unranked): a rank of 0 or below, a string, a float or a bool would score as a hit or as
    an infinite reciprocal rank; feedback is one of ``FEEDBACK_VALUES`` exactly ("Liked" would
    silently drop the target from RT@k and AUC)."""
    if not isinstance(r, dict):
        return f"a record is a {type(r).__name__}, not an object"
    for key in ("sample_id", "dialog_id"):
        if not isinstance(r.get(key), (str, int)) or isinstance(r.get(key), bool):
            return f"{key} is {r.get(key)!r}"
    targets = r.get("targets")
    if not isinstance(targets, list):
        return f"targets is {targets!r}, not a list"
    for t in targets:
        if not isinstance(t, dict) or not _is_int(t.get("item")):
            return f"target {t!r} has no integer item"
        if not _rank_ok(t.get("rank")):
            return f"target {t['item']} has rank {t.get('rank')!r} (ranks are integers >= 1, or null = unranked)"
        if t.get("feedback") not in FEEDBACK_VALUES:
            return (f"target {t['item']} has feedback {t.get('feedback')!r} "
                    f"(one of {', '.join(repr(v) for v in FEEDBACK_VALUES if v)} or null)")
    items, ranks = r.get("context_items", []), r.get("context_item_ranks", [])
    if not isinstance(items, list) or not isinstance(ranks, list) or not all(_is_int(i) for i in items):
        return "context_items / context_item_ranks are not lists of integers"
    if not all(_rank_ok(x) for x in ranks):
        bad = next(x for x in ranks if not _rank_ok(x))
        return f"context item rank {bad!r} (ranks are integers >= 1, or null)"
    if r.get("response") is not None and not isinstance(r["response"], str):
        return f"response is a {type(r['response']).__name__}, not text"
    if not isinstance(r.get("reference", ""), str):
        return "reference is not text"
    hyp_items = r.get("hyp_items", 0)
    if not _is_int(hyp_items) or hyp_items < 0:
        return f"hyp_items is {hyp_items!r}"
    return None


def validate_records(records: list[dict], source="the prediction records") -> None:
    """Refuse records that would score wrongly (see :func:`record_problem`) and duplicated
    sample ids (a sample scored twice), with one UserError naming the sample."""
    from crsbench.errors import UserError

    if not isinstance(records, list) or not records:
        raise UserError(f"{source}: no prediction records to score")
    seen = set()
    for number, r in enumerate(records, 1):
        problem = record_problem(r)
        if problem is not None:
            sample = r.get("sample_id") if isinstance(r, dict) else None
            raise UserError(f"{source}: record {number} (sample {sample!r}): {problem}")
        if r["sample_id"] in seen:
            raise UserError(f"{source}: sample {r['sample_id']!r} appears twice (record {number}); "
                            "every test sample is scored once")
        seen.add(r["sample_id"])


def dialog_index(records: list[dict]) -> dict[str, int]:
    return {d: i for i, d in enumerate(sorted({r["dialog_id"] for r in records}))}


def recommendation_units(records: list[dict], protocol: str, index: dict[str, int]) -> Units:
    dialogs, ranks, feedback = [], [], []
    for r in records:
        for _item, fb, rank in evaluated_ranks(protocol, r):
            dialogs.append(index[r["dialog_id"]])
            ranks.append(rank)
            feedback.append(fb)
    return Units(RECOMMENDATION, np.array(dialogs, dtype=np.int64),
                 {"rank": np.array(ranks, dtype=float), "feedback": feedback})


def generation_units(records: list[dict], index: dict[str, int]) -> Units | None:
    rows = [r for r in records if r.get("response") is not None]
    if not rows:
        return None
    return Units(GENERATION, np.array([index[r["dialog_id"]] for r in rows], dtype=np.int64),
                 {"hyp": [r["response"] for r in rows], "ref": [r["reference"] for r in rows],
                  "hyp_items": np.array([r.get("hyp_items", 0) for r in rows], dtype=float)})


def judge_units(records: list[dict], index: dict[str, int]) -> dict[str, Units]:
    """One group per judge and rubric: ``record["judge"] = {"<judge id>/<rubric>": {metric: score}}``."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        for judge_key, scores in (r.get("judge") or {}).items():
            groups.setdefault(f"{JUDGE}/{judge_key}", []).append((r, scores))
    out = {}
    for key, rows in sorted(groups.items()):
        names = sorted({m for _, scores in rows for m in scores})
        fields = {m: np.array([np.nan if scores.get(m) is None else float(scores[m]) for _, scores in rows])
                  for m in names}
        out[key] = Units(JUDGE, np.array([index[r["dialog_id"]] for r, _ in rows], dtype=np.int64), fields)
    return out


def _units_by_key(records, protocols, index) -> dict[str, Units]:
    units = {p: recommendation_units(records, p, index) for p in protocols}
    gen = generation_units(records, index)
    if gen is not None:
        units[GENERATION] = gen
    units.update(judge_units(records, index))
    return units


def without_feedback(records: list[dict]) -> bool:
    """True when no target has feedback (a task with ``has_feedback = False``): metrics
    that need it (``needs_feedback``: RT@k, AUC) are then not computed at all, rather than
    reported as NaN. A split whose targets are all "unknown" still gets them (as NaN)."""
    feedback = [t.get("feedback") for r in records for t in r["targets"]]
    return bool(feedback) and all(fb is None for fb in feedback)


def _metric_keys(metrics: dict, units: dict[str, Units],
                 no_feedback: bool = False) -> Iterable[tuple[str, str, object]]:
    from crsbench.metrics.judge import score_for

    for group, u in units.items():
        if u.kind == JUDGE:  # every judged field, with its registered metric if there is one
            for name in sorted(u.fields):
                metric = metrics.get(name)
                yield f"{group}/{name}", group, metric if metric is not None and metric.kind == JUDGE \
                    else score_for(name)
            continue
        for name in sorted(metrics):
            metric = metrics[name]
            if metric.kind == u.kind and not (no_feedback and getattr(metric, "needs_feedback", False)):
                yield f"{group}/{name}", group, metric


def score_records(records: list[dict], metrics: dict, protocols: Iterable[str],
                  n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, dict]:
    """Every metric under every protocol, with a dialogue-bootstrap (1-alpha) CI. ``n`` is the
    number of units the metric averages over (RT@k: liked targets; AUC: liked x disliked
    pairs; BLEU: non-empty replies), see ``Metric.count``."""
    validate_records(records)
    index = dialog_index(records)
    counts = draw_dialog_counts(len(index), n_boot, seed)
    units = _units_by_key(records, protocols, index)
    out = {}
    for key, group, metric in _metric_keys(metrics, units, without_feedback(records)):
        u = units[group]
        try:
            prepared = metric.prepare(u)
            value = metric.score(prepared, np.ones(len(u)))
            lo, hi = percentile_ci(replicate_scores(metric, prepared, u.dialog, counts), alpha) if n_boot \
                else (math.nan, math.nan)
            n = metric.count(prepared, len(u))
        except Exception as exc:  # a metric plugin's bug fails that metric, not the run
            out[key] = failed_metric(key, exc)
            continue
        out[key] = {"value": _clean(value), "ci_low": _clean(lo), "ci_high": _clean(hi), "n": n}
    return out


def failed_metric(key: str, exc: BaseException) -> dict:
    """The cell of a metric whose plugin raised while scoring: no value, and ``failed`` says
    which plugin and what it raised (the run's notes and log repeat it)."""
    import logging

    from crsbench.plugins import get_registry

    entry = get_registry().metrics().get(key.rsplit("/", 1)[-1])
    plugin = entry.plugin if entry is not None else "unknown plugin"
    reason = f"metric plugin {plugin!r} raised {type(exc).__name__}: {exc}"
    logging.getLogger("crsbench").warning("%s failed: %s", key, reason)
    return {"value": None, "ci_low": None, "ci_high": None, "n": 0, "failed": reason}


def failed_metric_notes(metrics: dict) -> list[str]:
    return [f"metric {key} not computed: {cell['failed']}" for key, cell in sorted(metrics.items())
            if isinstance(cell, dict) and cell.get("failed")]


def compare_records(records_a: list[dict], records_b: list[dict], metrics: dict,
                    protocols: Iterable[str], n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Per metric: A, B, B - A and a paired dialogue-bootstrap p-value."""
    validate_records(records_a, "run A's predictions")
    validate_records(records_b, "run B's predictions")
    by_id_b = {r["sample_id"]: r for r in records_b}
    shared = [r for r in records_a if r["sample_id"] in by_id_b]
    if not shared:
        raise ValueError("the two runs share no test samples")
    records_b = [by_id_b[r["sample_id"]] for r in shared]
    if any(a["dialog_id"] != b["dialog_id"] for a, b in zip(shared, records_b)):
        raise ValueError("the two runs disagree on which dialogue a sample belongs to: "
                         "were they made from the same task data?")
    index = dialog_index(shared)
    counts = draw_dialog_counts(len(index), n_boot, seed)
    units_a = _units_by_key(shared, protocols, index)
    units_b = _units_by_key(records_b, protocols, index)
    out = {}
    for key, group, metric in _metric_keys(metrics, units_a, without_feedback(shared)):
        if group not in units_b:
            continue
        ua, ub = units_a[group], units_b[group]
        if len(ua) != len(ub) or not np.array_equal(ua.dialog, ub.dialog):
            continue  # e.g. only one of the runs generated for some samples
        try:
            pa, pb = metric.prepare(ua), metric.prepare(ub)
            a, b = metric.score(pa, np.ones(len(ua))), metric.score(pb, np.ones(len(ub)))
            deltas = replicate_scores(metric, pb, ub.dialog, counts) - replicate_scores(metric, pa, ua.dialog, counts)
        except Exception as exc:  # a metric plugin's bug drops that metric from the comparison
            failed_metric(key, exc)
            continue
        lo, hi = percentile_ci(deltas)
        out[key] = {"a": _clean(a), "b": _clean(b), "delta": _clean(b - a), "ci_low": _clean(lo),
                    "ci_high": _clean(hi), "p_value": _clean(paired_p_value(deltas)), "n": metric.count(pa, len(ua))}
    return out


def _clean(x):
    """A metric value for JSON: NaN and +-inf (which json writes as the non-standard NaN /
    Infinity) become null."""
    x = float(x)
    return x if math.isfinite(x) else None
