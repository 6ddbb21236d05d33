"""Publishing a run into the leaderboard: only a sealed result whose predictions re-score to
its metrics, under a file name that never collides with another profile, seed or subset."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from crsbench.errors import UserError
from crsbench.leaderboard_build import write
from crsbench.leaderboard_load import DEFAULT_ROOT, RESULTS_DIR, check_result
from crsbench.provenance import require_versions
from crsbench.results import read_result, write_json_atomic


def _slug(value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9_.]+", "-", str(value)).strip("-.")
    return text or "none"


def published_name(result: dict) -> str:
    """``<model>-<profile>[-set<digest>]-seed<seed>-<variant>[-n<limit>].json``: a run with
    ``--set`` overrides or ``--limit`` never takes the file name of the profile's full-split
    result (and so never asks to overwrite it)."""
    from crsbench.runs import short_digest

    model = result["model"]
    overrides = model.get("overrides")
    limit = (result.get("evaluation") or {}).get("limit")
    return (f"{_slug(model['name'])}-{_slug(model.get('profile') or 'default')}"
            + (f"-set{short_digest(overrides)}" if isinstance(overrides, dict) and overrides else "")
            + f"-seed{_slug(result['seeds']['run'])}-{_slug(result['task']['data']['variant'])}"
            + (f"-n{_slug(limit)}" if limit else "") + ".json")


def verify_against_run(result: dict, source: Path) -> None:
    """A result may be published only as crsbench wrote it: its integrity digest must hold
    (no hand edits), and where the run's ``predictions.jsonl`` lies beside it, that file must be
    the one the metrics were computed from and re-scoring it must give exactly the stored metrics."""
    from crsbench.results import file_sha256, seal_problem

    problem = seal_problem(result)
    if problem:
        raise UserError(f"{source}: cannot publish: {problem}")
    predictions = source.parent / "predictions.jsonl"
    expected = result["integrity"].get("predictions_sha256")
    if not predictions.is_file():
        if expected:
            raise UserError(f"{source}: cannot publish without the run's predictions.jsonl beside it "
                            "(needed to check the metrics); publish the run directory")
        return
    if expected != file_sha256(predictions):
        raise UserError(f"{predictions} is not the predictions file {source.name} was computed from; "
                        "re-score with `crsbench evaluate` before publishing")
    differs = rescored_differences(result, predictions)
    if differs:
        raise UserError(f"{source}: its metrics are not what its predictions give ({'; '.join(differs[:3])}); "
                        "re-score the run with `crsbench evaluate RUN_DIR` before publishing")


def rescored_differences(result: dict, predictions: Path) -> list[str]:
    """Metrics of the result that re-scoring its predictions (same protocols, replicates and
    seed) does not reproduce exactly."""
    from crsbench.evaluation import score_records
    from crsbench.plugins import get_registry
    from crsbench.runs import read_jsonl

    evaluation = result.get("evaluation") or {}
    metrics = score_records(read_jsonl(predictions), get_registry().metrics_objects(),
                            result["task"].get("protocols") or ["standard"],
                            n_boot=int(evaluation.get("n_bootstrap") or 0),
                            seed=int((result.get("seeds") or {}).get("bootstrap", 0)))
    stored = result["metrics"]
    out = [f"{key}: stored {stored.get(key)}, re-scored {metrics.get(key)}"
           for key in sorted(set(stored) | set(metrics)) if stored.get(key) != metrics.get(key)]
    return out


def publish(run_dir: Path | str, root: Path | str = DEFAULT_ROOT, force: bool = False) -> Path:
    """Copy a run's result into ``results/<task>/`` and rebuild the tables.

    The file is validated with ``read_result`` but stored as the run wrote it (sorted keys),
    so the leaderboard keeps the original document. An existing different file is kept
    unless ``force``; republishing the identical result is a no-op.
    """
    run_dir, root = Path(run_dir), Path(root)
    source = run_dir / "result.json" if run_dir.is_dir() else run_dir
    result = read_result(source)
    if (result.get("extra") or {}).get("stopped"):
        raise UserError(f"{source}: this run was stopped by a guard ({result['extra']['stopped']}); "
                        "it has no metrics to publish")
    check_result(result, source)
    require_versions(result.get("plugins"), source)  # a row must say what to install
    original = json.loads(source.read_text(encoding="utf-8"))
    verify_against_run(original, source)  # as the run wrote it, and as its predictions score
    target = root / RESULTS_DIR / str(result["task"]["name"]) / published_name(result)
    if target.exists() and not force:
        try:
            existing = json.loads(target.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            existing = None
        if existing != original:
            raise UserError(f"{target} already holds a different result; pass --force to replace it")
    write_json_atomic(target, original)
    write(root)
    return target
