"""Judge rubrics: registered, versioned descriptions of what an LLM judge is asked.

A :class:`Rubric` holds every text a judge is shown (system prompt, criteria with their
definitions and 0/5/9 anchors, questions, speaker labels) and builds the prompts from them.
Rubrics are plugins' objects (the ``register_rubrics`` hook); the core knows none. A task
names its default rubric (``Task.default_rubric``); ``--judge-option rubric=NAME`` picks
another. ``name`` is the versioned id (e.g. ``ecr-subjective-v1``): it keys cached scores
and leaderboard columns (``judge/<judge id>/<rubric name>/<metric>``), so changing any text
needs a new name, and ``fingerprint`` pins the texts (``Rubric.check()`` compares).

Standard library only: judges import this at registration time.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

from crsbench.errors import UserError


@dataclass(frozen=True)
class Criterion:
    """One scored quality: its metric key, a title, its definition and the 0 / 5 / 9 anchors."""

    metric: str
    title: str
    definition: str
    anchors: tuple[str, str, str]


@dataclass(frozen=True)
class Rubric:
    name: str                    # versioned id, e.g. "ecr-subjective-v1"
    description: str
    criteria: tuple[Criterion, ...]
    system_prompt: str
    intro: str
    outro: str
    fingerprint: str             # pinned: sha256 prefix of every text below (see compute_fingerprint)
    answer_prefix: str = "Score (0-9):"
    metric_question: str = "Question: rate the {title} of the reply from 0 to 9. Answer with a single digit."
    all_metrics_question: str = ("Rate the reply on every quality. Answer with only a JSON object with "
                                 "the keys {keys}, each an integer from 0 to 9, and nothing else.")
    user_label: str = "User"
    system_label: str = "Recommender"
    empty_reply: str = "(empty reply)"
    max_turns: int = 6           # the last turns of the context shown to the judge
    max_turn_chars: int = 600    # longer turns are cut (with "...")
    score_min: int = 0
    score_max: int = 9
    domain: str = ""             # what the rubric is about (e.g. the item kind it rates)
    _by_metric: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_by_metric", {c.metric: c for c in self.criteria})

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(c.metric for c in self.criteria)

    @property
    def text(self) -> str:
        """The rubric block every prompt starts with."""
        lines = [self.intro, ""]
        for i, c in enumerate(self.criteria, 1):
            low, mid, high = c.anchors
            lines.append(f"{i}. {c.title.capitalize()} ({c.metric}): {c.definition}. "
                         f"0 = {low}; 5 = {mid}; 9 = {high}.")
        lines += ["", self.outro]
        return "\n".join(lines)

    def compute_fingerprint(self) -> str:
        parts = [self.name, self.system_prompt, self.text, self.answer_prefix, self.metric_question,
                 self.all_metrics_question, self.user_label, self.system_label, self.empty_reply,
                 str(self.max_turns), str(self.max_turn_chars)]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]

    def check(self) -> None:
        """Raise when a text changed without a new name and fingerprint."""
        if self.compute_fingerprint() != self.fingerprint:
            raise ValueError(f"rubric {self.name!r}: its texts changed (fingerprint {self.compute_fingerprint()}, "
                             f"pinned {self.fingerprint}); give it a new name and pin the new fingerprint")

    # -- prompts -----------------------------------------------------------------------------
    def _speaker(self, role: str | None, turns_from_end: int) -> str:
        if role is not None:
            r = role.lower()
            if r in ("seeker", "user", "human"):
                return self.user_label
            if r in ("recommender", "system", "assistant", "bot"):
                return self.system_label
        return self.user_label if turns_from_end % 2 == 1 else self.system_label

    def format_context(self, context: Sequence[str], roles: Sequence[str] | None = None,
                       max_turns: int | None = None, max_turn_chars: int | None = None) -> str:
        """The last ``max_turns`` turns as ``User: ...`` / ``Recommender: ...`` lines."""
        max_turns = self.max_turns if max_turns is None else max_turns
        max_turn_chars = self.max_turn_chars if max_turn_chars is None else max_turn_chars
        n = len(context)
        if roles is not None and len(roles) != n:
            raise ValueError(f"{len(roles)} roles for {n} context turns")
        start = max(0, n - max_turns) if max_turns > 0 else n
        lines = [] if start == 0 else ["(earlier turns omitted)"]
        for i in range(start, n):
            role = roles[i] if roles is not None else None
            lines.append(f"{self._speaker(role, n - i)}: {_cut(context[i], max_turn_chars)}")
        return "\n".join(lines) if lines else "(the conversation starts with the reply)"

    def prompt_parts(self, context: Sequence[str], response: str, metric: str | None = None, *,
                     roles: Sequence[str] | None = None, max_turns: int | None = None,
                     max_turn_chars: int | None = None) -> tuple[str, str]:
        """``(shared, question)``: the rubric, conversation and reply (the same for every metric
        of one pair, so a local judge runs it once), and the question (one metric, or all of
        them as a JSON object when ``metric`` is None)."""
        if metric is not None and metric not in self._by_metric:
            raise ValueError(f"unknown judge metric {metric!r} (known: {', '.join(self.metrics)})")
        max_turn_chars = self.max_turn_chars if max_turn_chars is None else max_turn_chars
        reply = _cut(response, 4 * max_turn_chars) if str(response).strip() else self.empty_reply
        conversation = self.format_context(context, roles, max_turns, max_turn_chars)
        shared = (f"{self.text}\n\nConversation:\n{conversation}"
                  f"\n\nReply to rate:\n{self.system_label}: {reply}\n\n")
        if metric is None:
            question = self.all_metrics_question.format(keys=", ".join(f'"{m}"' for m in self.metrics))
        else:
            question = self.metric_question.format(title=self._by_metric[metric].title)
        return shared, question

    def build_prompt(self, context: Sequence[str], response: str, metric: str | None = None, **kwargs) -> str:
        shared, question = self.prompt_parts(context, response, metric, **kwargs)
        return shared + question


def _cut(text: str, max_chars: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= max_chars else text[:max_chars].rstrip() + "..."


def resolve_rubric(spec: "Rubric | str | None") -> Rubric:
    """A rubric object, or the registered rubric called ``spec``; with None, the only
    registered rubric (a UserError when there are none or several to choose from)."""
    if isinstance(spec, Rubric):
        return spec
    from crsbench.plugins import get_registry

    registry = get_registry()
    rubrics = registry.rubrics()
    if spec is None:
        if len(rubrics) != 1:
            known = ", ".join(sorted(rubrics)) or "none"
            raise UserError(f"choose a judge rubric with --judge-option rubric=NAME (registered: {known}; "
                            "a task can name a default rubric)")
        spec = next(iter(rubrics))
    if spec not in rubrics:
        known = ", ".join(sorted(rubrics)) or "none"
        raise UserError(f"unknown judge rubric {spec!r} (known: {known}; see 'crsbench list rubrics')")
    return registry.use("rubrics", spec).obj
