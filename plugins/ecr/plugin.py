"""Registers ``ecr`` and ``unicrs``. Importing this module imports no torch."""
from crsbench import hookimpl


@hookimpl
def register_models(register):
    from crsbench_plugins.ecr.model import ECRModel, UniCRSModel

    register(ECRModel)
    register(UniCRSModel)
