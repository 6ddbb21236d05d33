"""Judges measured against people: correlation with human ratings, with bootstrap CIs.

A *judge benchmark* is a plugin's object (the ``register_judge_benchmarks`` hook): human
ratings of replies (turn level) and of whole dialogues (dialogue level), the rubric a judge
is asked with at each level, the published agreement of other evaluators, and a reader for
run files of predictions. The core knows no dataset; the judges plugin registers
``crsarena-eval``.

``crsbench judge validate JUDGE`` scores every labelled unit with a judge (through the score
cache) and writes one *validation record* per (judge id, rubric, data half):
Pearson and Spearman per aspect pooled over all units (as the papers report), the mean over
systems of the per-system Spearman (what matters when a judge compares replies of one
system, e.g. as an RL reward), 95% percentile-bootstrap CIs resampling conversations, and
the same numbers for trivial predictors computed on the same units. ``crsbench judge
score-run FILE`` does the same for a file of predictions. Records live in
``leaderboards/results/judges/`` (``leaderboards/judges.md`` is built from them); other code
finds a judge's record with :func:`find_validation`.

Standard library only at import (plugins import :class:`JudgeBenchmark` at registration);
numpy loads when something is computed.

Jobs, one module each: ``judge_benchmark`` (what a benchmark plugin provides),
``judge_stats`` (the correlations and their CIs), ``judge_records`` (record files); this
module scores judges and run files, and re-exports the others' public names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from crsbench.errors import UserError
# the public API, importable from here as before (plugins import the benchmark classes from here)
from crsbench.judge_benchmark import (CI_LEVEL, LEVELS, RESULTS_SUBDIR, SCHEMA, STAT_KEYS,  # noqa: F401
                                      VALIDATION_PATH_ENV, YEAR, BenchmarkData, JudgeBenchmark, Unit,
                                      get_benchmark)
from crsbench.judge_records import (check_record, crsbench_version, find_validation, format_estimate,  # noqa: F401
                                    git_commit, load_records, make_record, published_agreement,
                                    read_validation, record_filename, safe_name, search_dirs, summary_lines,
                                    write_validation)
from crsbench.judge_stats import aspect_stats, correlations, trivial_predictions  # noqa: F401


def _halves(units: Sequence[Unit]) -> list[str]:
    return sorted({u.half for u in units})


def scoring_order(units: Sequence[Unit]) -> list[Unit]:
    """The units with their conversations in a fixed pseudo-random order (sha256 of the
    conversation id; file order within one). A judge scores in this order, so the part of an
    interrupted run already in the score cache is a random sample of conversations, and
    ``--limit N`` (the first N units of this order) samples every system, not the file's first."""
    import hashlib

    rank = {g: hashlib.sha256(f"crsbench-judge-order:{g}".encode()).hexdigest() for g in {u.group for u in units}}
    return sorted(units, key=lambda u: rank[u.group])  # stable: file order within a conversation


def _limited(units: dict, limit: int | None) -> dict:
    return {lv: scoring_order(us)[:limit] if limit else scoring_order(us) for lv, us in units.items()}


def validate_judge(judge_name: str, options: dict | None = None, *, benchmark: JudgeBenchmark,
                   rubrics: Sequence[str] | None = None, data_path: str | None = None, limit: int | None = None,
                   n_bootstrap: int = 1000, seed: int = 0, batch_size: int = 16, progress: bool = True,
                   cache: bool = True) -> list[dict]:
    """Score the benchmark's units with a registered judge (one instance per rubric, each in
    the score cache) and return one record per (rubric, half)."""
    from crsbench.judge_eval import make_judge

    data = benchmark.load(data_path)
    data = BenchmarkData(data.name, data.sha256, _limited(data.units, limit))
    rubrics = list(rubrics or benchmark.rubrics.values())
    records = []
    for rubric in rubrics:
        level = benchmark.level_of(rubric)
        units = data.units.get(level) or []
        judge = make_judge(judge_name, {**(options or {}), "rubric": rubric}, cache=cache)
        aspects = [a for a in benchmark.aspects[level] if a in judge.metrics]
        if not aspects:
            raise UserError(f"judge {judge_name!r} with rubric {rubric!r} scores {', '.join(judge.metrics)}: "
                            f"none of the {level}-level aspects ({', '.join(benchmark.aspects[level])})")
        # a judge trained on some halves' labels (learned judges' ``trained_on``) would be scored in-sample there
        trained = set(getattr(getattr(judge, "judge", judge), "trained_on", ()))
        halves = [h for h in _halves(units) if (benchmark.name, h) not in trained]
        if not halves:
            raise UserError(f"judge {judge_name!r} was trained on these labels ({benchmark.name}, "
                            f"{', '.join(_halves(units))}): scored here it would be in-sample; its held-out "
                            "validation record is written by its training command (docs/judges.md)")
        units = [u for u in units if u.half in halves]
        predictions, failed = score_units(judge, units, batch_size, progress, f"{level}s")
        for half in halves:
            mine = [u for u in units if u.half == half]
            judged, trivial = aspect_stats(mine, predictions, aspects, level, n_bootstrap, seed)
            records.append(make_record(
                benchmark=benchmark, data=data, half=half, judge=judge.describe(), judge_id=judge.judge_id,
                rubric=rubric, levels=[level], aspects=judged, trivial=trivial, limit=limit,
                split=getattr(getattr(judge, "judge", judge), "validation_split", "all"),  # a learned judge's
                n_bootstrap=n_bootstrap, seed=seed, published=published_agreement(benchmark, half, aspects),
                extra={"n_failed": sum(1 for u in mine if u.key in failed), "stats": judge.stats()}))
    return records


def score_units(judge, units: Sequence[Unit], batch_size: int, progress: bool, what: str):
    from tqdm.auto import tqdm

    predictions: dict = {}
    failed: dict = {}
    bar = tqdm(total=len(units), desc=f"judging {what}", unit=what[:-1], disable=not progress)
    for start in range(0, len(units), batch_size):
        batch = units[start:start + batch_size]
        for unit, score in zip(batch, judge.score([u.item for u in batch])):
            if score.ok:
                predictions[unit.key] = dict(score.scores)
            else:
                failed[unit.key] = score.error
        bar.update(len(batch))
    bar.close()
    return predictions, failed


def score_run(run_path: str, *, benchmark: JudgeBenchmark, name: str | None = None, data_path: str | None = None,
              n_bootstrap: int = 1000, seed: int = 0, judge_id: str | None = None, rubric: str | None = None,
              split: str = "all") -> list[dict]:
    """One record per half for a run file of predictions (every level it predicts). A learned
    judge's held-out predictions are recorded under its own ``judge_id`` and ``rubric`` (then
    only that rubric's level is scored) with its held-out protocol as ``split``."""
    import hashlib

    from crsbench.judge import judge_id as make_id

    predictions = benchmark.read_run(run_path)
    data = benchmark.load(data_path)
    levels_wanted = [benchmark.level_of(rubric)] if rubric else list(LEVELS)
    all_units = [u for lv in levels_wanted for u in data.units.get(lv) or []]
    matched = [u for u in all_units if u.key in predictions]
    if not matched:
        raise UserError(f"{run_path}: none of its predictions matches a labelled unit of {benchmark.name} "
                        f"({data.name}); wrong data file?")
    sha = hashlib.sha256(Path(run_path).read_bytes()).hexdigest()
    label = name or Path(run_path).name.split(".")[0]
    judge = {"judge": "run-file", "model": label, "id": judge_id or make_id(label, {"run_sha256": sha[:16]}),
             "file": Path(run_path).name, "run_sha256": sha, "rubric_version": rubric or "run-file", "settings": {}}
    records = []
    for half in sorted({u.half for u in matched}):
        judged, trivial, levels = {}, {}, []
        for level in levels_wanted:
            units = [u for u in data.units.get(level) or [] if u.half == half]
            if not any(u.key in predictions for u in units):
                continue
            levels.append(level)
            a, t = aspect_stats(units, predictions, benchmark.aspects[level], level, n_bootstrap, seed)
            judged.update(a)
            for k, v in t.items():
                trivial.setdefault(k, {}).update(v)
        aspects = [a for lv in levels for a in benchmark.aspects[lv]]
        records.append(make_record(benchmark=benchmark, data=data, half=half, judge=judge, judge_id=judge["id"],
                                   rubric=rubric or "run-file", levels=levels, aspects=judged, trivial=trivial,
                                   split=split, n_bootstrap=n_bootstrap, seed=seed,
                                   published=published_agreement(benchmark, half, aspects)))
    return records
