"""Reference baselines, shipped as a plugin through the same entry-point group as any other."""
from crsbench import hookimpl


@hookimpl
def register_models(register):
    from crsbench_plugins.baselines.bm25 import BM25Model
    from crsbench_plugins.baselines.models import PopularityModel, RandomModel, RepeatContextModel

    register(RandomModel)
    register(PopularityModel)
    register(RepeatContextModel)
    register(BM25Model)
