"""The base class for tasks: a task owns its data and its evaluation protocol."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


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


class Task:
    """A benchmark task. Subclasses set ``name``, ``version`` and ``protocols``."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    description: ClassVar[str] = ""
    protocols: ClassVar[tuple[str, ...]] = ("standard",)

    def __init__(self, data_dir: str | None = None):
        self.data_dir = data_dir

    def load(self, limit: int | None = None) -> TaskData:
        """Load and preprocess every split. ``limit`` keeps the first N test dialogues."""
        raise NotImplementedError

    def data_info(self) -> dict[str, Any]:
        """``{"variant": ..., "sha256": ..., "files": {...}}`` describing the exact data used."""
        raise NotImplementedError

    def find_items(self, text: str) -> list[int]:
        """Catalogue items mentioned in a generated text (used by the item-ratio metric)."""
        return []
