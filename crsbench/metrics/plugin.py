"""The built-in metrics, registered through the same hook a third-party plugin uses."""
from crsbench import hookimpl


@hookimpl
def register_metrics(register):
    from crsbench.metrics import generation, recommendation

    # Judge metrics are registered with their rubrics (crsbench.metrics.judge).
    for metric in recommendation.all_metrics() + generation.all_metrics():
        register(metric)
