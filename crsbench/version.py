"""crsbench's version, in a leaf module: modules that ``crsbench/__init__.py`` imports (the
result writer, through the task module) read it from here, not from the package."""
__version__ = "0.1.0"
