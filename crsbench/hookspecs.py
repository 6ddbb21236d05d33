"""The plugin contract. Every hook receives a ``register`` callback (or the CLI group).

pluggy lets an implementation accept fewer arguments than the spec, so hooks can grow
new arguments without breaking existing plugins. Keep these signatures stable; each is
documented in docs/plugin-api.md and tested in tests/test_hooks.py.
"""
import pluggy

hookspec = pluggy.HookspecMarker("crsbench")
hookimpl = pluggy.HookimplMarker("crsbench")


@hookspec
def register_models(register):
    """Register model classes: ``register(ModelSubclass)``."""


@hookspec
def register_tasks(register):
    """Register task classes: ``register(TaskSubclass)``."""


@hookspec
def register_metrics(register):
    """Register metric instances: ``register(metric)``."""


@hookspec
def register_rewards(register):
    """Register reward classes: ``register(RewardSubclass)``."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``crsbench`` CLI group: ``cli.add_command(...)``."""


@hookspec
def register_judges(register):
    """Register judge classes (LLM judges that score responses): ``register(JudgeSubclass)``."""


@hookspec
def register_rubrics(register):
    """Register judge rubrics (``crsbench.rubric.Rubric`` instances): ``register(rubric)``."""


@hookspec
def register_judge_benchmarks(register):
    """Register judge benchmarks (``crsbench.judge_validation.JudgeBenchmark`` instances):
    human ratings that ``crsbench judge validate`` measures judges against."""


@hookspec
def register_report_sections(register):
    """Register report sections for ``crsbench report``: ``register(section)``, where
    ``section(results, labels)`` gets the loaded result dicts of the reported runs (and each
    run's label) and returns a list of report blocks, or None to add nothing."""
