"""Errors that the CLI reports as one line, without a traceback."""


class UserError(Exception):
    """A mistake in what the user asked for (unknown name, bad option, bad input file)."""


class DataError(UserError):
    """Input data that cannot be read: a missing file, a malformed JSONL line."""


class DegenerateRunError(Exception):
    """A run that must stop because its numbers would mean nothing (dead critic, flat reward)."""


def require_writable_dir(path, option: str):
    """``path`` as a directory that exists (created if needed) and that this process may write
    into; otherwise a UserError naming ``option`` (``--output-dir``), before anything is written."""
    import errno
    import os
    from pathlib import Path

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{option} {path}: a file of that name exists (a directory is needed)") from None
    except OSError as exc:
        reason = "a part of the path is a file, not a directory" if exc.errno == errno.ENOTDIR else exc.strerror
        raise UserError(f"{option} {path}: cannot create the directory ({reason})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: the directory is not writable")
    return path
