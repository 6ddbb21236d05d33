"""LLM judges: score a (dialogue context, response) pair on the metrics of a rubric.

What a judge is asked is a :class:`crsbench.rubric.Rubric`: a registered, versioned object
(the ``register_rubrics`` hook; ECR's five subjective metrics are the ``judges`` plugin's
``ecr-subjective-v1``). A judge takes the rubric as its ``rubric`` option (a name or an
object); a run passes its task's ``default_rubric`` unless told otherwise. Every result
records the judge's model id and the rubric's name, and scores of different judges or
rubrics never share a leaderboard column (``judge/<judge-id>/<rubric name>/<metric>``; the
judge id is the model id plus ``~`` and a digest of the settings that change its scores).

This module is imported by plugins at registration time, so it stays light: only the
standard library. Backends (transformers, an OpenAI-compatible endpoint) live in
``crsbench_plugins.judges``.

Pieces:

- :class:`JudgeInput`, :class:`JudgeScore`: one pair to score, and its scores or error;
- :class:`Judge`: the base class of judge plugins;
- :class:`JudgeCache` + :class:`CachedJudge`: an SQLite cache so a pair is scored once per
  (judge model, rubric, metric, input);
- :class:`MeanJudge`: the per-metric mean of several judges.
Each piece has its module (``judge_base``, ``judge_cache``, ``judge_mean``); this one is
their public face, where plugins import them from.
"""
from __future__ import annotations

from crsbench.judge_base import (SCORE_MAX, SCORE_MIN, Judge, JudgeInput, JudgeScore, check_score,  # noqa: F401
                                 input_digest, judge_id, metric_key, settings_digest, summarize)
from crsbench.judge_cache import CachedJudge, JudgeCache, default_cache_path  # noqa: F401
from crsbench.judge_mean import MeanJudge  # noqa: F401
