"""The per-metric digit prompts shared by the judges that read a digit's probability: the
in-process ``local``/``smollm2`` judge and the ``openai`` judge's ``digit-expectation``
method. Standard library only.

A plain-text prompt (no chat template) for one metric is ``shared + suffixes[k]``:
``shared`` is the rubric, conversation and reply (``Rubric.prompt_parts``), and a suffix is
the metric's question, a newline and the answer text (``answer_text``)."""
from __future__ import annotations

from crsbench.rubric import Rubric


def answer_text(rubric: Rubric, digits_with_space: bool) -> str:
    """What the prompt ends with: the answer prefix (``Score (0-9):``) when the digits are
    read with their leading space (" 7" is one token), else the prefix and a space."""
    return rubric.answer_prefix if digits_with_space else rubric.answer_prefix + " "


def metric_parts(rubric: Rubric, item, metrics, *, max_turns: int, max_turn_chars: int) -> tuple[str, list[str]]:
    """``(shared, questions)``: the text common to a pair's metric prompts and one question per metric."""
    parts = [rubric.prompt_parts(item.context, item.response, m, roles=item.roles,
                                 max_turns=max_turns, max_turn_chars=max_turn_chars) for m in metrics]
    return parts[0][0], [question for _, question in parts]


def plain_prompt_parts(rubric: Rubric, item, metrics, answer: str, *, max_turns: int,
                       max_turn_chars: int) -> tuple[str, list[str]]:
    """``(shared, suffixes)`` of the plain-text prompts; prompt ``k`` is ``shared + suffixes[k]``."""
    shared, questions = metric_parts(rubric, item, metrics, max_turns=max_turns, max_turn_chars=max_turn_chars)
    return shared, [question + "\n" + answer for question in questions]


__all__ = ["answer_text", "metric_parts", "plain_prompt_parts"]
