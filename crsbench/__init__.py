"""crsbench: a plugin-based benchmarking harness for conversational recommender systems.

Import what plugins need from here: ``from crsbench import hookimpl, Model, Task``.
This module stays light: no torch, transformers or datasets at import time.
"""
from crsbench.hookspecs import hookimpl
from crsbench.errors import DataError, DegenerateRunError, UserError
from crsbench.model import Model, RunContext
from crsbench.task import Task, TaskData
from crsbench.kg import KnowledgeGraph
from crsbench.metrics.base import MeanMetric, Metric, Units
from crsbench.reward import Reward
from crsbench.version import __version__

__all__ = [
    "hookimpl", "Model", "RunContext", "Task", "TaskData", "KnowledgeGraph", "Metric", "MeanMetric", "Units",
    "Reward", "UserError", "DataError", "DegenerateRunError", "__version__",
]
