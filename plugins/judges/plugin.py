"""Built-in judges: ``local`` (alias ``transformers``), ``smollm2`` (the offline default),
``openai`` (alias ``http``) and ``mean``.

Registering imports only the standard library and ``crsbench.judge``: torch and
transformers load when a local judge first scores (tests/test_judges.py checks this).
"""
from crsbench import hookimpl


@hookimpl
def register_judges(register):
    from crsbench.judge import MeanJudge
    from crsbench_plugins.judges.http import HTTPJudge, OpenAIJudge
    from crsbench_plugins.judges.local import LocalJudge, SmolLM2Judge, TransformersJudge

    for judge_class in (LocalJudge, TransformersJudge, SmolLM2Judge, OpenAIJudge, HTTPJudge, MeanJudge):
        register(judge_class)
