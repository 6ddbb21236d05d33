"""Leaderboards built only from stored result files (MTEB style), never from memory.

Layout under the leaderboard root (``leaderboards/`` by default):

- ``results/<task>/<file>.json``: one result document each (see ``crsbench.results``);
- ``reported/*.json``: numbers copied from papers (format in ``leaderboards/README.md``);
- ``<task>.md`` and ``<task>.csv``: generated here; ``check`` fails CI when they are stale.

Rows of different task versions, data variants, data checksums or splits never share a
table, and judge metrics of different judges or rubric versions never share a column.

Jobs, one module each: ``leaderboard_load`` (read and check the stored files),
``leaderboard_markdown`` (the tables), ``leaderboard_build`` (build, write, check),
``leaderboard_publish`` (publish a run); this module is their public face and the CLI.
"""
from __future__ import annotations

from pathlib import Path

import click

from crsbench.errors import UserError
# the public API, importable from here as before
from crsbench.leaderboard_build import build, check, write, write_text_atomic  # noqa: F401
from crsbench.leaderboard_format import CSV_FIELDS, MD_MARKER, MISSING, SHA_CHARS, csv_text, csv_text_cell  # noqa: F401
from crsbench.leaderboard_load import DEFAULT_ROOT, group_key, load_reported, load_results  # noqa: F401
from crsbench.leaderboard_markdown import (GENERATION_COLUMNS, RECOMMENDATION_COLUMNS, format_cell,  # noqa: F401
                                           md_code, md_text, model_package, profile_label)
from crsbench.leaderboard_publish import publish, published_name, rescored_differences, verify_against_run  # noqa: F401


# -- CLI -------------------------------------------------------------------------------
_root_option = click.option("--root", default=DEFAULT_ROOT, show_default=True,
                            type=click.Path(file_okay=False, path_type=Path),
                            help="Leaderboard directory (results/, reported/, generated tables).")


def _user_errors(fn):
    """Report UserError as one line with exit status 2, standalone or under the main CLI."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = 2  # a user mistake, as everywhere in the CLI
            raise error from None
    return wrapper


@click.group("leaderboard")
def leaderboard_group():
    """Build, check and publish leaderboards from stored result files."""


@leaderboard_group.command("build")
@_root_option
@_user_errors
def build_command(root: Path):
    """Regenerate the tables (<task>.md, <task>.csv) from results/ and reported/."""
    written = write(root)
    for path in written:
        click.echo(f"wrote {path}")
    if not written:
        click.echo(f"no result or reported files under {root}; nothing to build")


@leaderboard_group.command("check")
@_root_option
@_user_errors
def check_command(root: Path):
    """Exit 1 if the generated tables differ from what the result files give."""
    problems = check(root)
    if problems:
        click.echo("leaderboard check failed:", err=True)
        for line in problems:
            click.echo(f"  {line}", err=True)
        click.echo("stale, missing or extra tables: run `crsbench leaderboard build` and commit the result; "
                   "a result without plugin versions: rerun it with the plugin installed as a package",
                   err=True)
        raise SystemExit(1)
    click.echo(f"leaderboard tables under {root} are up to date")


@leaderboard_group.command("publish")
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@_root_option
@click.option("--force", is_flag=True, help="Replace an existing different result file.")
@_user_errors
def publish_command(run_dir: Path, root: Path, force: bool):
    """Copy RUN_DIR/result.json into the leaderboard and rebuild the tables."""
    target = publish(run_dir, root, force=force)
    click.echo(f"published {target}; tables rebuilt under {root}")
