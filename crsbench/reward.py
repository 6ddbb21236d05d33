"""The base class for reward plugins (used by RL-trained models)."""
from __future__ import annotations

from typing import ClassVar


class Reward:
    """Scores generated responses; higher is better. Subclasses set ``name``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, **options):
        self.options = options

    def score(self, samples: list[dict], responses: list[str]) -> list[float]:
        raise NotImplementedError
