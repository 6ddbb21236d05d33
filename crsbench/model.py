"""The base class every model plugin implements.

The harness owns evaluation: a model returns rankings and (if it generates) texts, and
never computes its own metrics. Heavy imports (torch, transformers) belong inside methods
or in modules imported from them, so that registering a model stays fast.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass
class RunContext:
    """What a model may use during a run: where to write, which seed and device."""

    run_dir: Path
    seed: int = 0
    device: str = "cpu"
    profile: str = "default"
    progress: bool = True  # show progress bars (``--no-progress`` turns them off)
    # the run's evaluation judge as {"name": ..., **options} (``--judge``), None without one
    judge: dict | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("crsbench"))

    @property
    def checkpoint_dir(self) -> Path:
        path = self.run_dir / "checkpoints"
        path.mkdir(parents=True, exist_ok=True)
        return path


class Model:
    """A conversational recommender.

    Subclasses set ``name`` (the CLI name), ``version`` and ``profiles`` (profile name ->
    config dict; the first one is the default) and implement ``recommend``; generating
    models set ``generates = True`` and implement ``generate``; training models implement
    ``fit``.

    Samples are dicts with the keys documented in docs/plugin-api.md (``context``,
    ``context_items``, ``targets``, ...).
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    description: ClassVar[str] = ""
    generates: ClassVar[bool] = False
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}
    # What ``--set`` may put into a profile: dotted key (or fnmatch pattern) -> crsbench.config.Param
    # (type, bounds, choices, nullable). Keys not named here take values of their profile value's type.
    config_schema: ClassVar[dict[str, Any]] = {}
    # A killed run resumes prediction after the batches already stored, which gives the
    # records of an uninterrupted run only if a batch's output does not depend on random
    # state carried over from earlier batches; a model whose output does sets this False.
    resumable_predictions: ClassVar[bool] = True
    # Whether ``fit`` may run in several processes (``accelerate launch``): every process
    # calls fit, rank 0 alone writes and predicts. A model whose training cannot be split
    # that way sets this to a sentence that says why and what to do instead.
    multi_process: ClassVar[bool | str] = True

    def __init__(self, config: dict[str, Any], context: RunContext):
        self.config = config
        self.context = context

    @classmethod
    def default_profile(cls, device: str = "cpu") -> str:
        """The profile used when the user names none; GPU-aware models may override."""
        return next(iter(cls.profiles))

    @classmethod
    def default_judge(cls, config: dict[str, Any]) -> dict[str, Any] | None:
        """The judge (``{"name": ..., **options}``) that scores this model's replies on a
        seeded test sample when the user gives no ``--judge``; None: no judged sample.
        ``config`` is the run's resolved profile (after ``--set``)."""
        return None

    def fit(self, data) -> None:
        """Train on ``data`` (a :class:`crsbench.task.TaskData`). Models that do not train skip it."""

    def recommend(self, batch: list[dict]) -> list[list[int]]:
        """Return, for each sample, item ids ranked best first.

        A ranking may be partial (at least the top 50 is expected); items it leaves out
        count as tied below every ranked item.
        """
        raise NotImplementedError

    def result_extra(self) -> dict[str, Any]:
        """Model-specific summaries for the result file (loss curves, validation numbers)."""
        return {}

    def generate(self, batch: list[dict]) -> list[str]:
        """Return the recommender's reply for each sample (only if ``generates``)."""
        raise NotImplementedError(f"model {self.name!r} does not generate responses")
