"""Errors that the CLI reports as one line, without a traceback."""


class UserError(Exception):
    """A mistake in what the user asked for (unknown name, bad option, bad input file)."""


class DataError(UserError):
    """Input data that cannot be read: a missing file, a malformed JSONL line."""


class DegenerateRunError(Exception):
    """A run that must stop because its numbers would mean nothing (dead critic, flat reward)."""
