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
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from crsbench.errors import UserError

SCHEMA = "crsbench-judge-validation/1"
RESULTS_SUBDIR = Path("results") / "judges"   # under the leaderboard root
LEVELS = ("turn", "dialogue")
CI_LEVEL = 0.95
YEAR = re.compile(r"\(\d{4}\)")
STAT_KEYS = ("pearson", "spearman", "pearson_ci", "spearman_ci", "within_system_spearman",
             "within_system_spearman_ci", "n")
VALIDATION_PATH_ENV = "CRSBENCH_JUDGE_VALIDATION_PATH"


# -- what a benchmark plugin provides ---------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One human-rated thing a judge scores. ``key``: how run files address it (e.g.
    ``(conv_id, turn_ind)`` or ``(conv_id,)``); ``group``: the conversation (the bootstrap
    resamples groups); ``system``: who wrote it; ``half``: the data subset reported on its own;
    ``item``: a :class:`crsbench.judge.JudgeInput`; ``labels``: aspect -> mean human rating;
    ``n_turns``: turns of the conversation up to and including the unit."""

    key: tuple
    group: str
    system: str
    half: str
    item: Any
    labels: dict
    n_turns: int


@dataclass(frozen=True)
class BenchmarkData:
    """Loaded data: a name, the sha256 of the data file, and the units per level."""

    name: str
    sha256: str
    units: dict  # level ("turn"/"dialogue") -> list[Unit]


@dataclass(frozen=True)
class JudgeBenchmark:
    """A registered judge benchmark. ``load(path_or_None)`` -> :class:`BenchmarkData` (None:
    the bundled data); ``read_run(path)`` -> ``{unit key: {aspect: prediction}}``;
    ``published(path_or_None)`` -> ``{half: {evaluator: {aspect: {pearson, spearman}}}}``;
    ``rubrics``/``aspects``: per level; ``default_run``: a bundled run file, if any."""

    name: str
    description: str
    rubrics: dict
    aspects: dict
    load: Callable
    read_run: Callable
    published: Callable
    default_run: str | None = None
    citation: str = ""
    extra: dict = field(default_factory=dict)

    def level_of(self, rubric: str) -> str:
        for level, name in self.rubrics.items():
            if name == rubric:
                return level
        raise UserError(f"benchmark {self.name!r} has no level rated with rubric {rubric!r} "
                        f"(its rubrics: {', '.join(self.rubrics.values())})")


def get_benchmark(name: str | None = None) -> JudgeBenchmark:
    """A registered benchmark by name; None: the only one registered."""
    from crsbench.plugins import get_registry

    registry = get_registry()
    found = registry.judge_benchmarks()
    if name is None:
        if len(found) != 1:
            raise UserError(f"choose a judge benchmark with --benchmark (registered: {', '.join(sorted(found)) or 'none'})")
        name = next(iter(found))
    if name not in found:
        raise UserError(f"unknown judge benchmark {name!r} (known: {', '.join(sorted(found)) or 'none'})")
    return registry.use("judge_benchmarks", name).obj


# -- statistics (numpy, loaded on use) ---------------------------------------------------------
def _midranks(values, weights):
    """(B, n) ranks of ``values`` (n,) in B weighted samples: a unit with weight w stands for
    w copies; ties get their mean rank, so this equals ranking the expanded sample."""
    import numpy as np

    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    tied = np.add.reduceat(weights[:, order], starts, axis=1)
    ranks = np.cumsum(tied, axis=1) - tied + (tied + 1) / 2
    tie_of = np.empty(len(values), dtype=int)
    tie_of[order] = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(values)]))
    return ranks[:, tie_of]


def _pearson(x, y, weights):
    """Weighted Pearson per row of ``weights`` (B, n); x, y: (n,) or (B, n). NaN when constant."""
    import numpy as np

    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = x - ((weights * x).sum(axis=1) / total)[:, None]
        dy = y - ((weights * y).sum(axis=1) / total)[:, None]
        vx, vy = (weights * dx * dx).sum(axis=1), (weights * dy * dy).sum(axis=1)
        r = (weights * dx * dy).sum(axis=1) / np.sqrt(vx * vy)
    r[~(vx > 1e-12 * total) | ~(vy > 1e-12 * total) | (total < 3)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _spearman(x, y, weights):
    return _pearson(_midranks(x, weights), _midranks(y, weights), weights)


def _ci(replicates) -> list | None:
    from crsbench.bootstrap import percentile_ci

    lo, hi = percentile_ci(replicates, 1 - CI_LEVEL)
    return None if math.isnan(lo) else [round(lo, 6), round(hi, 6)]


def _num(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def correlations(pred: Sequence[float], gold: Sequence[float], groups: Sequence[str], systems: Sequence[str],
                 counts=None, group_ids: dict | None = None) -> dict:
    """Pooled Pearson and Spearman, the mean per-system Spearman, and their bootstrap CIs.
    ``counts``: (B, G) draws of how often each group appears (``crsbench.bootstrap``), indexed
    by ``group_ids`` (group -> column); None: no CIs."""
    import numpy as np

    x, y = np.asarray(pred, dtype=float), np.asarray(gold, dtype=float)
    n = len(x)
    out: dict[str, Any] = dict.fromkeys(STAT_KEYS)
    out["n"] = n
    if n == 0:
        return out
    ones = np.ones((1, n))
    system_index = {s: np.array([i for i, t in enumerate(systems) if t == s]) for s in sorted(set(systems))}

    def within(weights):
        per = [_spearman(x[idx], y[idx], weights[:, idx]) for idx in system_index.values() if len(idx) >= 3]
        if not per:
            return np.full(weights.shape[0], np.nan)
        with np.errstate(invalid="ignore"), _quiet():
            stacked = np.vstack(per)
            mean = np.nanmean(stacked, axis=0)
        return mean

    out["pearson"] = _num(_pearson(x, y, ones)[0])
    out["spearman"] = _num(_spearman(x, y, ones)[0])
    out["within_system_spearman"] = _num(within(ones)[0])
    out["n_systems"] = len(system_index)
    if counts is not None and len(counts):
        weights = counts[:, [group_ids[g] for g in groups]]
        out["pearson_ci"] = _ci(_pearson(x, y, weights)) if out["pearson"] is not None else None
        out["spearman_ci"] = _ci(_spearman(x, y, weights)) if out["spearman"] is not None else None
        out["within_system_spearman_ci"] = (_ci(within(weights)) if out["within_system_spearman"] is not None
                                            else None)
    return out


class _quiet:
    """Silence numpy's 'mean of empty slice' warnings (all-NaN columns give NaN, as wanted)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


# -- trivial predictors ------------------------------------------------------------------------
def _words(text: str) -> int:
    return len(str(text).split())


def trivial_predictions(units: Sequence[Unit], level: str, aspect: str) -> dict[str, list[float]]:
    """Predictors that read no meaning, on the same units: reply length in words, whether the
    reply contains a ``(YYYY)`` year (turn level), the number of turns (dialogue level), and
    the mean human label of the writing system over all its units of this data (in-sample,
    plain: it sees each unit's own label; it is constant within a system, so it has no
    within-system correlation)."""
    by_system: dict[str, list[float]] = {}
    for u in units:
        if aspect in u.labels:
            by_system.setdefault(u.system, []).append(u.labels[aspect])
    means = {s: sum(v) / len(v) for s, v in by_system.items()}
    out: dict[str, list[float]] = {}
    if level == "turn":
        out["reply length (words)"] = [float(_words(u.item.response)) for u in units]
        out["contains a (YYYY) year"] = [float(bool(YEAR.search(str(u.item.response)))) for u in units]
    else:
        out["number of turns"] = [float(u.n_turns) for u in units]
    out["system mean label"] = [means.get(u.system, float("nan")) for u in units]
    return out


# -- evaluation --------------------------------------------------------------------------------
def _draws(units: Sequence[Unit], n_bootstrap: int, seed: int):
    from crsbench.bootstrap import draw_dialog_counts

    group_ids = {g: i for i, g in enumerate(dict.fromkeys(u.group for u in units))}
    return draw_dialog_counts(len(group_ids), n_bootstrap, seed) if n_bootstrap else None, group_ids


def aspect_stats(units: Sequence[Unit], predictions: dict, aspects: Sequence[str], level: str,
                 n_bootstrap: int = 1000, seed: int = 0) -> tuple[dict, dict]:
    """``(aspects, trivial)`` of a record: per aspect the correlations of ``predictions``
    (unit key -> {aspect: value}) with the labels, over the units that have both; and the same
    for every trivial predictor. One bootstrap draw matrix is shared by all of them."""
    counts, group_ids = _draws(units, n_bootstrap, seed)
    judged, trivial = {}, {}
    for aspect in aspects:
        have = [u for u in units if aspect in u.labels]
        if not have:
            continue
        scored = [u for u in have if aspect in (predictions.get(u.key) or {})]
        judged[aspect] = correlations([predictions[u.key][aspect] for u in scored],
                                      [u.labels[aspect] for u in scored], [u.group for u in scored],
                                      [u.system for u in scored], counts, group_ids)
        judged[aspect].update(n_missing=len(have) - len(scored), level=level)
        for name, values in trivial_predictions(have, level, aspect).items():
            trivial.setdefault(name, {})[aspect] = dict(correlations(
                values, [u.labels[aspect] for u in have], [u.group for u in have], [u.system for u in have],
                counts, group_ids), level=level)
    return judged, trivial


def _halves(units: Sequence[Unit]) -> list[str]:
    return sorted({u.half for u in units})


def git_commit() -> str | None:
    from crsbench.results import git_state

    return git_state().get("commit")


def crsbench_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("crsbench")
    except metadata.PackageNotFoundError:
        return None


def make_record(*, benchmark: JudgeBenchmark, data: BenchmarkData, half: str, judge: dict, judge_id: str,
                rubric: str, levels: Sequence[str], aspects: dict, trivial: dict, split: str = "all",
                limit: int | None = None, n_bootstrap: int = 1000, seed: int = 0, extra: dict | None = None,
                published: dict | None = None) -> dict:
    """A validation record (the schema B's learned judges write too; see docs/judges.md)."""
    units = data.units
    record = {
        "schema": SCHEMA,
        "benchmark": benchmark.name,
        "judge": judge,
        "judge_id": judge_id,
        "rubric": rubric,
        "levels": list(levels),
        "data": {"name": data.name, "half": half, "sha256": data.sha256, "limit": limit,
                 "n_turns": sum(1 for u in units.get("turn", []) if u.half == half),
                 "n_dialogues": sum(1 for u in units.get("dialogue", []) if u.half == half),
                 "n_conversations": len({u.group for lv in units.values() for u in lv if u.half == half})},
        "split": split,
        "aspects": aspects,
        "aspect_order": list(aspects),  # the benchmark's order (the file's keys are sorted)
        "trivial": trivial,
        "published": published or {},
        "bootstrap": {"n": n_bootstrap, "seed": seed, "ci_level": CI_LEVEL, "resampling": "conversations",
                      "within_system": "mean over systems of the per-system Spearman"},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "crsbench_version": crsbench_version(),
        "git_commit": git_commit(),
    }
    if extra:
        record.update(extra)
    return record


def published_agreement(benchmark: JudgeBenchmark, half: str, aspects: Sequence[str]) -> dict:
    table = (benchmark.published(None) or {}).get(half) or {}
    return {name: {a: v for a, v in rows.items() if a in aspects} for name, rows in table.items()}


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


# -- record files ------------------------------------------------------------------------------
def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-.") or "none"


def record_filename(record: dict) -> str:
    """``<safe judge id>__<rubric>__<half>.json``"""
    return f"{safe_name(record['judge_id'])}__{safe_name(record['rubric'])}__{safe_name(record['data']['half'])}.json"


def write_validation(record: dict, path: str | os.PathLike) -> Path:
    """Write a record atomically (checked first); returns the path."""
    from crsbench.results import write_json_atomic

    check_record(record, path)
    write_json_atomic(Path(path), record)
    return Path(path)


def check_record(record: Any, path: Any = "record") -> dict:
    """The keys every reader relies on; a UserError naming what is missing."""
    if not isinstance(record, dict):
        raise UserError(f"{path}: a validation record is a JSON object")
    for key in ("schema", "judge", "judge_id", "rubric", "data", "split", "aspects", "trivial"):
        if key not in record:
            raise UserError(f"{path}: not a judge validation record (missing {key!r})")
    if not str(record["schema"]).startswith("crsbench-judge-validation/"):
        raise UserError(f"{path}: unknown validation record schema {record['schema']!r}")
    if not isinstance(record["data"], dict) or "half" not in record["data"]:
        raise UserError(f"{path}: validation record data lacks 'half'")
    if not isinstance(record["aspects"], dict):
        raise UserError(f"{path}: validation record aspects must be an object")
    return record


def read_validation(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such validation record") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    return check_record(record, path)


def search_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Where records are looked for: ``$CRSBENCH_JUDGE_VALIDATION_PATH`` (os.pathsep-separated),
    ``<root>/results/judges`` (default ``leaderboards/``, then the source checkout's), and the
    ``data/validation/`` folder of every loaded plugin's package (records shipped with a judge)."""
    dirs = [Path(p) for p in os.environ.get(VALIDATION_PATH_ENV, "").split(os.pathsep) if p]
    dirs.append(Path(root or "leaderboards") / RESULTS_SUBDIR)
    dirs.append(Path(__file__).resolve().parent.parent / "leaderboards" / RESULTS_SUBDIR)
    try:
        from crsbench.plugins import get_registry

        for info in get_registry().plugins.values():
            module = info.module.split(":")[0]
            spec = _find_spec(module)
            if spec is not None and spec.origin:
                dirs.append(Path(spec.origin).parent / "data" / "validation")
    except Exception:  # noqa: BLE001 - a broken plugin must not hide the other records
        pass
    out: list[Path] = []
    for d in dirs:
        resolved = d.resolve()
        if resolved not in out and resolved.is_dir():
            out.append(resolved)
    return out


def _find_spec(module: str):
    import importlib.util

    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def find_validation(judge_id: str, rubric: str, half: str | None = None,
                    root: str | os.PathLike | None = None) -> dict | None:
    """The validation record of a judge id and rubric (optionally of one data half), or None.
    Records of ``--limit`` runs count only when there is no complete one. Each record found
    gets a private ``_path``."""
    partial = None
    for directory in search_dirs(root):
        for path in sorted(directory.glob("*.json")):
            try:
                record = read_validation(path)
            except UserError:
                continue
            if record["judge_id"] != judge_id or record["rubric"] != rubric:
                continue
            if half is not None and record["data"].get("half") != half:
                continue
            record["_path"] = str(path)
            if record["data"].get("limit") is None:
                return record
            partial = partial or record
    return partial


def load_records(root: str | os.PathLike) -> list[dict]:
    """Every record under ``<root>/results/judges/`` (the leaderboard's), each with ``_file``."""
    base = Path(root) / RESULTS_SUBDIR
    out = []
    for path in sorted(base.glob("*.json")) if base.is_dir() else []:
        record = read_validation(path)
        record["_file"] = path.name
        out.append(record)
    return out


# -- printing ----------------------------------------------------------------------------------
def format_estimate(value, ci=None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    return text + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def summary_lines(record: dict) -> list[str]:
    """A plain-text table of a record: the judge, the trivial predictors, the published rows."""
    data = record["data"]
    levels = record.get("levels") or list(LEVELS)
    counts = ", ".join(f"{data.get(f'n_{lv}s')} {lv}s" for lv in levels if f"n_{lv}s" in data)
    lines = [f"{record['judge_id']} · rubric {record['rubric']} · {record.get('benchmark', '?')} half "
             f"{data['half']} ({counts}"
             f"{', a sample of ' + str(data['limit']) + ' units per level (--limit)' if data.get('limit') else ''})"]
    header = f"  {'aspect':<18} {'predictor':<26} {'Spearman pooled [95% CI]':<26} {'within system [95% CI]':<26} Pearson     n"
    lines.append(header)
    for aspect, stats in record["aspects"].items():
        rows = [("judge", stats)] + [(name, per[aspect]) for name, per in record["trivial"].items() if aspect in per]
        for name, s in rows:
            lines.append(f"  {aspect:<18} {name:<26} {format_estimate(s.get('spearman'), s.get('spearman_ci')):<26} "
                         f"{format_estimate(s.get('within_system_spearman'), s.get('within_system_spearman_ci')):<26} "
                         f"{format_estimate(s.get('pearson')):<11} {s.get('n')}")
        for name, per in (record.get("published") or {}).items():
            p = per.get(aspect) or {}
            if p.get("spearman") is not None:
                lines.append(f"  {aspect:<18} {name + ' (published)':<26} {format_estimate(p.get('spearman')):<26} "
                             f"{'n/a':<26} {format_estimate(p.get('pearson')):<11}")
    return lines
