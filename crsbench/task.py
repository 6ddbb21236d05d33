"""The base class for tasks: a task owns its data and its evaluation protocol.

Data that cannot be bundled (a licence, its size) is found by one convention
(:func:`resolve_data_dir`): ``--data-dir DIR``, else the environment variable
``CRSBENCH_DATA_<TASK>`` (the task name in capitals, other characters as ``_``), else the
task's bundled data; a task with none (``requires_data_dir = True``) stops with one
``Error:`` line that says where to get it (``data_source``). The data's sha256
(``data_info()["sha256"]``, :func:`files_sha256` computes it) is part of the run identity.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable

from crsbench.errors import DataError


@dataclass
class TaskData:
    """Loaded splits plus the item catalogue.

    ``splits`` maps split name to a sequence of sample dicts (a ``datasets.Dataset`` for the
    built-in tasks). ``items`` is the full recommendable catalogue that rankings cover.
    """

    splits: dict[str, Any]
    items: list[int]
    item_names: dict[int, str]
    extra: dict[str, Any] = field(default_factory=dict)
    kg: Any = None  # a crsbench.kg.KnowledgeGraph, where the task has a graph (models need: require_kg)
    mention_spans: Any = None  # text -> [(start, end)] of item mentions (the runner fills it from Task.mention_spans)
    item_placeholder: str | None = None  # what replaces an item mention in response_template (the runner
    #                                      fills it from Task.item_placeholder when the task leaves it None)
    default_rubric: str | None = None  # the judge rubric for this task's replies (the runner fills
    #                                    it from Task.default_rubric when the task leaves it None)


class Task:
    """A benchmark task. Subclasses set ``name``, ``version`` and ``protocols``."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    description: ClassVar[str] = ""
    protocols: ClassVar[tuple[str, ...]] = ("standard",)
    # Whether samples carry per-target seeker feedback (``target_feedback``). A task without
    # it leaves the key out of its samples and records ``has_feedback: false`` in data_info();
    # the feedback metrics (RT@k, AUC) are then not computed rather than reported as NaN.
    has_feedback: ClassVar[bool] = True
    # The registered judge rubric (`crsbench list rubrics`) that fits this task's replies;
    # None: a judged run must name one (--judge-option rubric=NAME).
    default_rubric: ClassVar[str | None] = None
    # The token that stands for an item mention in ``response_template`` (ReDial: "<movie>").
    # A generated reply that still holds it counts as mentioning an item (the item-ratio metric).
    item_placeholder: ClassVar[str] = "<item>"
    # True for a task whose data is not bundled: it needs --data-dir or CRSBENCH_DATA_<TASK>.
    requires_data_dir: ClassVar[bool] = False
    # Where to get the data (a URL and what to download), shown when none is given.
    data_source: ClassVar[str | None] = None

    def __init__(self, data_dir: str | None = None):
        self.data_dir = data_dir

    def load(self, limit: int | None = None) -> TaskData:
        """Load and preprocess every split. ``limit`` keeps the first N test dialogues."""
        raise NotImplementedError

    def data_info(self) -> dict[str, Any]:
        """``{"variant": ..., "sha256": ..., "files": {...}}`` describing the exact data used."""
        raise NotImplementedError

    def data_fingerprint(self) -> str | None:
        """The sha256 of the exact data used (``data_info()["sha256"]``): part of a run's identity,
        so a run never resumes on other data."""
        return (self.data_info() or {}).get("sha256")

    def find_items(self, text: str) -> list[int]:
        """Catalogue items mentioned in a generated text (used by the item-ratio metric)."""
        return []

    def mention_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans ``[start, end)`` of item mentions in a dialogue text, in the task's
        own spelling (models mask them, e.g. ECR before labelling emotions). Default: none."""
        return []


def data_env_var(task_name: str) -> str:
    """``CRSBENCH_DATA_<TASK>``: ``opendialkg`` -> ``CRSBENCH_DATA_OPENDIALKG``, ``example-books`` ->
    ``CRSBENCH_DATA_EXAMPLE_BOOKS``."""
    return "CRSBENCH_DATA_" + re.sub(r"[^A-Z0-9]", "_", task_name.upper())


def resolve_data_dir(task_cls, data_dir: str | None) -> str | None:
    """The task's data directory: ``--data-dir``, else ``$CRSBENCH_DATA_<TASK>``, else None (the
    bundled data). A directory that does not exist, or no directory for a task that bundles
    no data, is a DataError that says what to do."""
    env = data_env_var(task_cls.name)
    source = "--data-dir"
    if data_dir is None and os.environ.get(env):
        data_dir, source = os.environ[env], env
    if data_dir is None:
        if getattr(task_cls, "requires_data_dir", False):
            where = task_cls.data_source or "see the task's documentation"
            raise DataError(f"task {task_cls.name!r} needs its data, which is not bundled (get it from: {where}); "
                            f"pass --data-dir DIR or set {env}=DIR")
        return None
    if not Path(data_dir).is_dir():
        raise DataError(f"{source} {data_dir}: no such directory"
                        + (f" (task {task_cls.name!r}'s data: {task_cls.data_source})" if task_cls.data_source else ""))
    return str(data_dir)


def files_sha256(files: dict[str, Any] | Iterable) -> tuple[dict[str, str], str]:
    """``({name: sha256}, combined sha256)`` of data files (``{name: path}`` or paths, named by
    file name): the combined digest is the sha256 of the sorted ``"name sha256"`` lines, what
    ``data_info()`` records as ``sha256``."""
    from crsbench.results import file_sha256

    if not isinstance(files, dict):
        files = {Path(p).name: p for p in files}
    hashes = {name: file_sha256(path) for name, path in files.items()}
    return hashes, combined_sha256(hashes)


def combined_sha256(hashes: dict[str, str]) -> str:
    joined = "\n".join(f"{name} {digest}" for name, digest in sorted(hashes.items()))
    return hashlib.sha256(joined.encode()).hexdigest()


def task_defaults(data, task) -> None:
    """What the task class declares and its TaskData leaves unset (rubric, placeholder, mention spans)."""
    if data.default_rubric is None:
        data.default_rubric = type(task).default_rubric
    if data.item_placeholder is None:
        data.item_placeholder = type(task).item_placeholder
    if data.mention_spans is None:
        data.mention_spans = task.mention_spans
