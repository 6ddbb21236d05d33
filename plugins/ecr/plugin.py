"""Plugin registration (work in progress)."""
from crsbench import hookimpl  # noqa: F401
