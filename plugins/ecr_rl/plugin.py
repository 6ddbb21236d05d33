"""Registers ``ecr-rl``. Importing this module imports no torch."""
from crsbench import hookimpl


@hookimpl
def register_models(register):
    from crsbench_plugins.ecr_rl.model import ECRRLModel

    register(ECRRLModel)
