"""The built-in metrics, registered through the same hook a third-party plugin uses."""
from crsbench import hookimpl


@hookimpl
def register_metrics(register):
    from crsbench.metrics import generation, judge, recommendation

    for metric in recommendation.all_metrics() + generation.all_metrics() + judge.all_metrics():
        register(metric)
