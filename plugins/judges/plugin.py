"""Built-in judges: ``local`` (alias ``transformers``), ``smollm2`` (offline, for tests and plumbing),
``openai`` (alias ``http``), ``mean``, the learned ``minilm-human``, ``minilm-contrast``,
``minilm-human-a`` and ``minilm-human-b``;
the ``ecr-subjective-v1``, ``crsarena-turn-v1`` and ``crsarena-dialogue-v1`` rubrics; and the
``crsarena-eval`` judge benchmark.

Registering imports only the standard library and ``crsbench.judge``: torch and
transformers load when a local judge first scores (tests/test_judges.py checks this).
"""
from crsbench import hookimpl


@hookimpl
def register_judges(register):
    from crsbench.judge import MeanJudge
    from crsbench_plugins.judges.http import HTTPJudge, OpenAIJudge
    from crsbench_plugins.judges.local import LocalJudge, TransformersJudge
    from crsbench_plugins.judges.smollm2 import SmolLM2Judge

    for judge_class in (LocalJudge, TransformersJudge, SmolLM2Judge, OpenAIJudge, HTTPJudge, MeanJudge):
        register(judge_class)
    from crsbench_plugins.judges.learned import JUDGES  # minilm-human(-a/-b), minilm-contrast (stdlib at import)

    for judge_class in JUDGES:
        register(judge_class)


@hookimpl
def register_rubrics(register):
    from crsbench_plugins.judges.rubrics import RUBRICS

    for rubric in RUBRICS:
        register(rubric)


@hookimpl
def register_judge_benchmarks(register):
    """CRSArena-Eval: people's ratings of CRS turns and dialogues (``crsbench judge validate``)."""
    from crsbench_plugins.judges.crsarena import _benchmark

    register(_benchmark())


@hookimpl
def register_metrics(register):
    """One mean-score metric per criterion of this plugin's rubrics."""
    from crsbench.metrics.judge import JudgeScore
    from crsbench_plugins.judges.rubrics import RUBRICS

    for name in dict.fromkeys(m for rubric in RUBRICS for m in rubric.metrics):
        register(JudgeScore(name))
