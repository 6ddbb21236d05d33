"""Run directories: what a run writes and how commands find it again.

A run directory holds config.json, log.txt, checkpoints/, predictions.jsonl,
item_names.json and result.json.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from crsbench.errors import UserError
from crsbench.results import atomic_write

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # a model, task or profile name in a run directory name
CONFIG_FILE = "config.json"
PREDICTIONS_FILE = "predictions.jsonl"
PARTIAL_PREDICTIONS_FILE = "predictions.partial.jsonl"  # finished batches, while predicting
ITEM_NAMES_FILE = "item_names.json"


def write_jsonl_atomic(path: Path, rows) -> None:
    """One JSON object per line, written with :func:`crsbench.results.atomic_write`."""
    def write(fh):
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    atomic_write(path, write)


class RunLock:
    """An exclusive lock on a run directory, so two runs never write into one.

    The lock is ``flock`` on ``<parent>/.<run name>.lock`` (beside the directory, so
    ``--fresh`` can delete the directory while holding it); the kernel releases it when the
    process ends, however it ends, so a rerun after a kill is never blocked. A second
    process gets a UserError naming the holder's pid."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir.parent / f".{self.run_dir.name}.lock"
        self._fh = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise UserError(f"another crsbench run (pid {holder}) is using {self.run_dir}; "
                            "wait for it to finish or pass --output-dir to run elsewhere") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file drops the flock
            self._fh = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def read_jsonl(path: Path) -> list[dict]:
    """Read JSON lines; a malformed line is a user-facing error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    number = 0
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:  # binary, truncated or damaged
        raise UserError(f"{path}:{number + 1}: cannot be read as UTF-8 JSON lines ({exc})") from None
    return rows


def require_run_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"no such run directory: {path}")
    for name in (CONFIG_FILE, PREDICTIONS_FILE):
        if not (path / name).is_file():
            raise UserError(f"{path} is not a complete run directory (missing {name})")
    return path


def read_config(run_dir: Path) -> dict:
    """A run's config.json, checked for the fields every command reads (task, protocols, seed)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a run configuration (a JSON object is expected)")
    for key, ok in (("task", lambda v: isinstance(v, str)),
                    ("protocols", lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v)),
                    ("seed", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)):
        if not ok(config.get(key)):
            raise UserError(f"{path}: not a complete run configuration ({key!r} is "
                            f"{'missing' if key not in config else repr(config[key])})")
    return config


# -- run directory names and identity ----------------------------------------------------------
def require_safe_name(kind: str, name) -> str:
    """A model, task or profile name that becomes part of a path: letters, digits and ``_.+-``,
    not starting with a dot (so never ``..`` or a path separator)."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
        raise UserError(f"{kind} name {name!r} cannot name a run directory (letters, digits and _ . + - "
                        "only, not starting with a dot); rename it in its plugin")
    return name


def short_digest(value, chars: int = 8) -> str:
    """The first ``chars`` hex digits of the sha256 of ``value``'s canonical JSON."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:chars]


def config_overrides(profile_config: dict, config: dict, prefix: str = "") -> dict:
    """``{dotted key: value}`` where ``config`` differs from the profile it came from (what the
    ``--set`` overrides changed)."""
    out = {}
    for key in sorted(set(profile_config) | set(config)):
        a, b = profile_config.get(key), config.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(config_overrides(a, b, f"{prefix}{key}."))
        elif a != b or (key in profile_config) != (key in config):
            out[f"{prefix}{key}"] = b
    return out


def run_name(model: str, task: str, profile: str, seed: int, limit: int | None = None,
             data_sha256: str | None = None, overrides: dict | None = None) -> str:
    """``<model>_<task>_<profile>_s<seed>[_n<limit>][_data-<sha8>][_set-<digest8>]``: a run with
    ``--limit``, with ``--data-dir`` data (its content's sha256) or with ``--set`` overrides
    (a digest of the values they changed) never shares a directory with the default run."""
    for kind, name in (("model", model), ("task", task), ("profile", profile)):
        require_safe_name(kind, name)
    name = f"{model}_{task}_{profile}_s{int(seed)}" + (f"_n{int(limit)}" if limit else "")
    if data_sha256:
        name += f"_data-{str(data_sha256)[:8]}"
    if overrides:
        name += f"_set-{short_digest(overrides)}"
    return name


def inside(path: Path, parent: Path) -> bool:
    """``path`` (not itself a symlink) lies in ``parent`` once both are resolved."""
    path, parent = Path(path), Path(parent)
    return not path.is_symlink() and path.resolve().parent == parent.resolve()


def remove_run_dir(run_dir: Path, output_dir: Path) -> None:
    """``--fresh``: delete a run directory, but only one crsbench made (it has config.json, or
    it is empty), that is no symlink and that lies directly in ``output_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.exists() and not run_dir.is_symlink():
        return
    if not inside(run_dir, output_dir) or not run_dir.is_dir():
        raise UserError(f"--fresh: {run_dir} is a symlink or not a directory inside {output_dir}; "
                        "not deleting it")
    if not (run_dir / CONFIG_FILE).is_file() and any(run_dir.iterdir()):
        raise UserError(f"--fresh: {run_dir} is not a crsbench run directory (no {CONFIG_FILE}); "
                        "not deleting it")
    shutil.rmtree(run_dir)


def describe_differences(old, new, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf where two configurations differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            if key not in old:
                out.append(f"{prefix}{key}: not recorded -> {_short(new[key])}")
            elif key not in new:
                out.append(f"{prefix}{key}: {_short(old[key])} -> not set")
            else:
                out += describe_differences(old[key], new[key], f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {_short(old)} -> {_short(new)}"]


def _short(value, chars: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False) if not isinstance(value, str) else value
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a sha256
    return text if len(text) <= chars else text[:chars - 1] + "…"


def twin_run(run_dir: Path, model: str, other_model: str, accept) -> Path | None:
    """A finished-or-not run directory of ``other_model`` beside ``run_dir`` (a run of ``model``)
    with the same task, profile, seed, limit and data, whatever its ``--set`` digest, whose
    config ``accept(config)`` approves and whose recorded task identity (task version, data
    sha256) equals this run's. For a model that reuses another's checkpoints (ecr-rl reuses ecr's):
    never a run made from other data."""
    run_dir = Path(run_dir)
    if not run_dir.name.startswith(model + "_"):
        return None
    base = re.sub(r"_set-[0-9a-f]{8}$", "", other_model + "_" + run_dir.name[len(model) + 1:])
    try:
        mine = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8")).get("identity") or {}
    except (OSError, ValueError):
        return None
    candidates = [run_dir.parent / base] + sorted(run_dir.parent.glob(glob.escape(base) + "_set-*"))
    for other in candidates:
        try:
            config = json.loads((other / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if other.is_symlink() or (config.get("identity") or {}).get("task") != mine.get("task"):
            continue
        if accept(config):
            return other
    return None
