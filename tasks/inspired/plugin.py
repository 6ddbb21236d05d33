"""Registers the ``inspired`` task. Light on purpose: the task module imports no torch or datasets."""
from crsbench import hookimpl


@hookimpl
def register_tasks(register):
    from crsbench_tasks.inspired.task import InspiredTask

    register(InspiredTask)
