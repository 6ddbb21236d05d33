"""Registers ``ecr-rl`` and its ``crsbench report`` section. Importing this module imports no torch."""
from crsbench import hookimpl


@hookimpl
def register_models(register):
    from crsbench_plugins.ecr_rl.model import ECRRLModel

    register(ECRRLModel)


@hookimpl
def register_report_sections(register):
    from crsbench_plugins.ecr_rl.report_section import rl_summary

    register(rl_summary)
