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

    def mention_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans ``[start, end)`` of item mentions in a dialogue text, in the task's
        own spelling (models mask them, e.g. ECR before labelling emotions). Default: none."""
        return []
