"""The versioned result file: one JSON document per run, written atomically.

Schema history (bump SCHEMA_VERSION and add an upgrade step when a field changes meaning):
  1 - first version.
  2 - ``plugins``: entry point, module, distribution and version of the model's, the task's
      and every metric/reward/judge plugin the run used; ``model.distribution`` and
      ``model.distribution_version``. Upgrading a version-1 file sets ``plugins`` to None
      (its provenance is unknown, so ``crsbench leaderboard publish`` refuses it).
Added without a version bump (optional; older files simply lack them): ``integrity``
(``predictions_sha256``, ``sha256`` of the document; see :func:`seal`), ``rescored`` (who
re-scored the stored predictions, and when: ``crsbench evaluate``), ``model.overrides`` (the
``--set`` values that changed the profile) and ``evaluation.sample_ids_sha256``.
Readers accept every earlier version by upgrading it step by step, so old result files in
``leaderboards/`` keep working.
"""
from __future__ import annotations

import errno
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from crsbench.errors import UserError

SCHEMA_VERSION = 2
RESULT_FILE = "result.json"
TRACKED_LIBRARIES = ("crsbench", "torch", "transformers", "datasets", "numpy", "pluggy", "sacrebleu",
                     "rouge-score", "nltk", "accelerate", "trl", "torch-geometric")



def _upgrade_1_to_2(result: dict) -> dict:
    out = dict(result)
    out["plugins"] = result.get("plugins")
    out["schema_version"] = 2
    return out


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def disk_full_error(path: Path, exc: OSError) -> UserError:
    """A full disk (or a file-size limit) is the user's to fix: one clear line, no traceback."""
    kept = f"the previous {Path(path).name} is unchanged" if Path(path).exists() else "nothing was written"
    return UserError(f"could not write {path}: {exc.strerror or exc}; {kept}")


# version -> function turning a result of that version into the next version
_UPGRADES: dict[int, Callable[[dict], dict]] = {1: _upgrade_1_to_2}


def atomic_write(path: Path, write: Callable[[Any], None], *, newline: str | None = None) -> None:
    """The one way crsbench writes a file: ``write(fh)`` into a temp file in the same
    directory, flushed to disk, then renamed over ``path``, so readers never see half a file
    and a crash or a full disk (one ``Error:`` line) leaves the previous file as it was. The
    file gets the usual permissions (0666 less the umask), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())  # on disk before the rename, so a crash cannot leave an empty file
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(path, exc) from None
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented, key-sorted JSON, written with :func:`atomic_write`."""
    def write(fh):
        json.dump(data, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")
    atomic_write(path, write)


def read_result(path: Path) -> dict:
    """Read a result file of any schema version up to ours, upgraded to the current one."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_FILE
    if not path.is_file():
        raise UserError(f"no result file at {path}")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if not isinstance(result, dict):
        raise UserError(f"{path}: not a crsbench result file (a JSON object is expected)")
    version = result.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{path}: not a crsbench result file (no valid schema_version)")
    if version > SCHEMA_VERSION:
        raise UserError(f"{path}: schema version {version} is newer than this crsbench reads "
                        f"({SCHEMA_VERSION}); upgrade crsbench")
    while version < SCHEMA_VERSION:
        result = _UPGRADES[version](result)
        version = result["schema_version"]
    return result


# -- integrity ---------------------------------------------------------------------------------
INTEGRITY = "integrity"


def file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def document_sha256(result: dict) -> str:
    """sha256 of the result's canonical JSON without its ``integrity`` entry (and without the
    private ``_run`` entry the leaderboard adds when it reads a file)."""
    import hashlib

    body = {k: v for k, v in result.items() if k not in (INTEGRITY, "_run")}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal(result: dict, predictions: Path | None = None) -> dict:
    """Record, in ``result["integrity"]``, the sha256 of the predictions file the metrics were
    computed from and of the document itself, so that ``crsbench leaderboard publish`` can tell
    a result edited after the run wrote it (``verify_seal``). Call it last, just before writing."""
    result[INTEGRITY] = {"predictions_sha256": file_sha256(predictions) if predictions is not None
                         and Path(predictions).is_file() else None}
    result[INTEGRITY]["sha256"] = document_sha256(result)
    return result


def seal_problem(result: dict) -> str | None:
    """Why a result's integrity record does not hold (None when it does)."""
    record = result.get(INTEGRITY)
    if not isinstance(record, dict) or not record.get("sha256"):
        return ("it has no integrity record (written before crsbench recorded one, or edited); "
                "re-score its run with `crsbench evaluate RUN_DIR` to record one")
    if record["sha256"] != document_sha256(result):
        return ("its content does not match its integrity digest: it was edited after crsbench wrote it; "
                "re-score the run with `crsbench evaluate RUN_DIR` instead of editing result.json")
    return None


def library_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_state(start: Path | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the repository crsbench runs from, if any."""
    cwd = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def peak_memory_mb() -> float:
    """Peak resident memory of this process and its finished children (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def environment(device: str, git: dict | None = None) -> dict[str, Any]:
    """``git``: the repository state when the run started (``git_state()`` then); the code a
    run imported is the code of its start, not of the moment the result is written."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "libraries": library_versions(),
        "git": git if git is not None else git_state(),
    }


def build_result(*, task: dict, model: dict, seeds: dict, evaluation: dict, metrics: dict,
                 timings: dict, device: str, notes: list[str] | None = None,
                 extra: dict | None = None, created: str | None = None,
                 plugins: dict | None = None, git: dict | None = None) -> dict:
    """Assemble a result document.

    task:       {"name", "version", "protocols": [...], "data": {"variant", "sha256", "files"}}
    model:      {"name", "version", "plugin", "distribution", "distribution_version", "profile",
                 "config": {...}, "generates": bool}
    plugins:    {"model": record, "task": record, "metrics": [record], "rewards": [record],
                 "judges": [record]}, record = {"entry_point", "module", "distribution", "version",
                 "names": [registered names used]} (crsbench.provenance.plugins_used)
    seeds:      {"run": int, "bootstrap": int}
    evaluation: {"split", "n_bootstrap", "ci_level", "resampling", "n_samples", "n_dialogs",
                 "n_targets": {protocol: n}, "n_responses", "limit"}
    metrics:    {"<protocol or generation>/<metric>": {"value", "ci_low", "ci_high", "n"}}
    timings:    seconds per phase, e.g. {"load": .., "fit": .., "predict": .., "score": .., "total": ..}
    """
    from datetime import datetime, timezone

    from crsbench.version import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "crsbench_version": __version__,
        "created": created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": task,
        "model": model,
        "plugins": plugins,
        "seeds": seeds,
        "evaluation": evaluation,
        "metrics": metrics,
        "timings": {k: round(float(v), 2) for k, v in timings.items()},
        "peak_memory_mb": peak_memory_mb(),
        "environment": environment(device, git),
        "notes": list(notes or []),
        "extra": extra or {},
    }
