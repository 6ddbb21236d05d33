"""Emotion annotators by name: :func:`make_annotator` builds one from the registry (``"lexicon"``
by default) or wraps a given object; :func:`register_annotator` adds a name (the hook point
for an LLM-judge annotator)."""
from __future__ import annotations

from typing import Any, Callable

from crsbench_plugins.ecr.emotion_base import Annotator, CallableAnnotator, SupportsAnnotate
from crsbench_plugins.ecr.lexicon_annotator import LexiconAnnotator

ANNOTATORS: dict[str, Callable[..., Any]] = {"lexicon": LexiconAnnotator}


def register_annotator(name: str, factory: Callable[..., Any]) -> None:
    """Make ``make_annotator(name, **options)`` call ``factory(**options)``; the factory
    returns anything with ``annotate(texts)``. This is how an LLM-judge annotator plugs in:
    ``register_annotator("llm", lambda **o: MyLLMAnnotator(judge, **o))``."""
    ANNOTATORS[name] = factory


def make_annotator(name: str | SupportsAnnotate = "lexicon", **options) -> Annotator:
    """An :class:`Annotator` by registry name, or wrapping a given annotator object.

    - ``make_annotator("lexicon", sharpness=2.0)``: the rule annotator with options;
    - ``make_annotator(obj)``: any object with ``annotate(texts)`` (outputs are checked and
      normalised by :class:`CallableAnnotator`);
    - ``make_annotator("llm", annotator=obj)``: the hook point for the LLM annotator; ``obj``
      has ``annotate(texts)`` (e.g. one that prompts an LLM judge with the nine labels and
      parses up to two labels with probabilities). Without ``annotator=`` the name must have
      been registered with :func:`register_annotator`.
    """
    if not isinstance(name, str):
        return name if isinstance(name, Annotator) and not options else CallableAnnotator(name, **options)
    if "annotator" in options:
        inner = options.pop("annotator")
        if options:
            raise TypeError(f"unexpected options with annotator=: {sorted(options)}")
        return CallableAnnotator(inner, name=getattr(inner, "name", None) or name)
    if name not in ANNOTATORS:
        hint = (" pass make_annotator('llm', annotator=obj) with an object that has annotate(texts), or "
                "register_annotator('llm', factory) first") if name == "llm" else ""
        raise KeyError(f"unknown emotion annotator {name!r} (registered: {sorted(ANNOTATORS)});{hint}")
    made = ANNOTATORS[name](**options)
    return made if isinstance(made, Annotator) else CallableAnnotator(made, name=name)
