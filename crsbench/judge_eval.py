"""LLM-judge evaluation of a run's replies on a fixed, seeded sample of test dialogues.

The sample depends only on the test dialogues, the sample size and the seed, so two runs
on the same data (ECR and ECR-RL, say) are judged on the same replies' contexts and can be
compared pairwise. Scores go into the prediction records (``record["judge"]``), so
``crsbench evaluate`` and ``crsbench compare`` use them like any other metric.
"""
from __future__ import annotations

import logging

import numpy as np

from crsbench.errors import UserError

log = logging.getLogger("crsbench")


def parse_judge_options(items) -> dict:
    """``("threads=1", "model=x")`` -> ``{"threads": 1, "model": "x"}``."""
    from crsbench.config import parse_value

    out = {}
    for item in items or ():
        if "=" not in item:
            raise UserError(f"--judge-option expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        out[key.strip()] = parse_value(raw)
    return out


def make_judge(name, options: dict | None = None, cache: bool = True):
    """A registered judge by name (or ``{"name": ..., **options}``), wrapped in the score cache."""
    from crsbench.judge import CachedJudge
    from crsbench.plugins import lookup

    if isinstance(name, dict):
        options = {**{k: v for k, v in name.items() if k != "name"}, **(options or {})}
        name = name["name"]
    cls = lookup("judges", name).obj
    try:
        judge = cls(**(options or {}))
    except TypeError as exc:
        raise UserError(f"judge {name!r}: {exc}") from None
    return CachedJudge(judge) if cache else judge


def judge_sample(records: list[dict], n_dialogs: int, seed: int) -> list[int]:
    """Indices of one recommendation turn (with a reply) in each of ``n_dialogs`` sampled dialogues."""
    by_dialog: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        if r.get("response") is not None and r["targets"]:
            by_dialog.setdefault(r["dialog_id"], []).append(i)
    dialogs = sorted(by_dialog)
    rng = np.random.default_rng([seed, 7919])
    chosen = sorted(rng.choice(len(dialogs), size=min(n_dialogs, len(dialogs)), replace=False).tolist())
    return [by_dialog[dialogs[k]][int(rng.integers(len(by_dialog[dialogs[k]])))] for k in chosen]


def judge_records(records: list[dict], judge, n_dialogs: int, seed: int, progress: bool = True) -> dict:
    """Judge the sampled records in place; returns what the result file records about it."""
    from tqdm.auto import tqdm

    from crsbench.judge import JudgeInput

    idx = judge_sample(records, n_dialogs, seed)
    key = judge.key  # judge id (model + settings digest) / rubric
    items = [JudgeInput(list(records[i].get("context") or []), records[i]["response"],
                        records[i].get("context_roles")) for i in idx]
    scores = []
    bar = tqdm(total=len(items), desc="judge", unit="reply", disable=not progress)
    for start in range(0, len(items), 8):
        scores += judge.score(items[start:start + 8])
        bar.update(len(items[start:start + 8]))
    bar.close()
    errors = [score.error or "no scores" for score in scores if not score.ok]
    if idx and len(errors) == len(idx):  # nothing to report: an error, not a result without judge metrics
        raise UserError(f"judge {key}: all {len(idx)} judge calls failed (first: {errors[0]}); "
                        "no judge scores were recorded and nothing was written")
    failed = len(errors)
    for i, score in zip(idx, scores):
        if score.ok:
            records[i].setdefault("judge", {})[key] = {m: float(v) for m, v in score.scores.items()}
    info = dict(judge.describe(), key=key, n_sampled=len(idx), n_failed=failed, stats=judge.stats(),
                sample_seed=seed, n_dialogs_requested=n_dialogs)
    log.info("judged %d replies with %s (%d failed)", len(idx), key, failed)
    return info
