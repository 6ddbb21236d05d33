"""The `crsbench` command line. Start-up imports no torch, transformers or datasets."""
from __future__ import annotations

import errno
import sys
from pathlib import Path

import click

from crsbench.errors import DegenerateRunError, UserError
from crsbench.plugins import REGISTRIES, get_registry

SEED = click.IntRange(0, 2 ** 32 - 1)  # what numpy and torch accept as a seed


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crsbench")
def cli():
    """Benchmark conversational recommender systems: train, evaluate, compare, publish."""


@cli.command()
@click.argument("model")
@click.option("--task", "task_name", required=True, help="Task name, e.g. redial.")
@click.option("--profile", default=None, help="Model profile (default: the model's first / device-appropriate one).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--output-dir", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--limit", default=None, type=int, help="Evaluate on the first N test dialogues only.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--data-dir", default=None,
              help="The task's data in this directory instead of the bundled data (default: the environment "
                   "variable CRSBENCH_DATA_<TASK>, e.g. CRSBENCH_DATA_REDIAL, where set).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value of the profile, dotted (stage1.lr=1e-4; repeatable). VALUE is read as "
                   "YAML (yaml.safe_load) and checked against the profile's type and range for that key.")
@click.option("--n-bootstrap", default=1000, show_default=True, type=click.IntRange(0, None))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, None))
@click.option("--fresh", is_flag=True, help="Delete an existing run directory instead of resuming in it.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--judge", default=None, help="Score replies with this judge (see 'crsbench list judges').")
@click.option("--judge-option", "judge_options", multiple=True, metavar="KEY=VALUE",
              help="Judge option, e.g. model=mistralai/Mistral-7B-Instruct-v0.2 (repeatable).")
@click.option("--judge-sample", default=100, show_default=True, type=click.IntRange(1, None),
              help="Number of test dialogues (seeded sample) the judge scores.")
def run(model, task_name, profile, seed, output_dir, limit, device, data_dir, overrides, n_bootstrap,
        batch_size, fresh, no_progress, judge, judge_options, judge_sample):
    """Train (if needed) and evaluate MODEL on a task; write a run directory."""
    from crsbench.runner import run as run_model
    from crsbench.tables import metrics_table

    run_dir = run_model(model, task_name, profile=profile, seed=seed, output_dir=output_dir, limit=limit,
                        device=device, data_dir=data_dir, overrides=overrides, n_bootstrap=n_bootstrap,
                        batch_size=batch_size, fresh=fresh, progress=not no_progress, judge=judge,
                        judge_options=judge_options, judge_sample=judge_sample)
    from crsbench import distributed

    if not distributed.is_main():  # another process of a launch: it trained; rank 0 writes and reports
        return
    from crsbench.results import read_result

    result = read_result(run_dir)
    click.echo(metrics_table(result))
    for note in result["notes"]:
        click.echo(f"note: {note}")
    click.echo(f"run directory: {run_dir}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--n-bootstrap", default=None, type=click.IntRange(0, None))
@click.option("--judge", default=None, help="Also judge the stored replies of a seeded sample of dialogues.")
@click.option("--judge-option", "judge_options", multiple=True, metavar="KEY=VALUE")
@click.option("--judge-sample", default=100, show_default=True, type=click.IntRange(1, None))
def evaluate(run_dir, n_bootstrap, judge, judge_options, judge_sample):
    """Re-score a run's stored predictions without re-running the model."""
    from crsbench.runner import parse_judge_options, rescore
    from crsbench.runs import require_run_dir
    from crsbench.tables import metrics_table

    path = require_run_dir(run_dir)
    metrics = rescore(path, n_bootstrap, judge=judge, judge_options=parse_judge_options(judge_options),
                      judge_sample=judge_sample)
    click.echo(metrics_table({"metrics": metrics}))


@cli.command()
@click.argument("run_a", type=click.Path())
@click.argument("run_b", type=click.Path())
@click.option("--n-bootstrap", default=1000, show_default=True, type=click.IntRange(1, None))
@click.option("--seed", default=0, show_default=True, type=SEED)
def compare(run_a, run_b, n_bootstrap, seed):
    """Per-metric difference B - A with paired dialogue-bootstrap p-values."""
    from crsbench.compare import compare_runs

    click.echo(compare_runs(Path(run_a), Path(run_b), n_bootstrap=n_bootstrap, seed=seed))


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("-n", "count", default=5, show_default=True, type=click.IntRange(1, None))
@click.option("--seed", default=0, show_default=True, type=SEED)
def samples(run_dir, count, seed):
    """Show a few test samples with the model's rankings and replies."""
    from crsbench.compare import show_samples
    from crsbench.runs import require_run_dir

    click.echo(show_samples(require_run_dir(run_dir), count, seed))


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--output", "-o", default="report", show_default=True, type=click.Path(file_okay=False),
              help="Directory for report.md, report.html and images.")
@click.option("-n", "count", default=5, show_default=True, type=click.IntRange(0, None),
              help="Side-by-side sample replies.")
@click.option("--seed", default=0, show_default=True, type=SEED)
def report(run_dirs, output, count, seed):
    """Write a Markdown + HTML report of one or more runs (the first is the baseline)."""
    from crsbench.errors import require_writable_dir
    from crsbench.report import write_report

    require_writable_dir(output, "--output")

    path = write_report(list(run_dirs), output, n_samples=count, seed=seed)
    click.echo(f"wrote {path} and {path.with_suffix('.html')}")


@cli.group(name="task")
def task_group():
    """Inspect a task's data."""


@task_group.command(name="check")
@click.argument("task_name", metavar="TASK")
@click.option("--data-dir", default=None,
              help="The task's data in this directory (default: $CRSBENCH_DATA_<TASK>, else the bundled data).")
def task_check(task_name, data_dir):
    """Check a task's data: sample keys and types, targets in the catalogue, graph ids in range,
    duplicate dialogues, split overlap. Exit 0 when clean, 1 with the findings listed."""
    from crsbench.plugins import lookup
    from crsbench.task import resolve_data_dir
    from crsbench.task_check import check_data, summary

    task_cls = lookup("tasks", task_name).obj
    task = task_cls(data_dir=resolve_data_dir(task_cls, data_dir))
    data = task.load()
    findings = check_data(data, has_feedback=task_cls.has_feedback)
    info = task.data_info() or {}
    click.echo(f"task {task_name} v{task_cls.version}, data {info.get('variant', '?')} "
               f"(sha256 {str(info.get('sha256') or '?')[:12]}): {summary(data)}")
    if not findings:
        click.echo("clean: no findings")
        return
    for finding in findings:
        click.echo(f"  {finding}")
    errors = sum(f.is_error for f in findings)
    click.echo(f"{len(findings)} finding(s); {errors} of them make 'crsbench run' refuse the data")
    raise click.exceptions.Exit(1)


@cli.command(name="list")
@click.argument("what", required=False, type=click.Choice(REGISTRIES))
def list_(what):
    """List registered models, tasks, metrics, rewards and judges."""
    registry = get_registry()
    for kind in [what] if what else REGISTRIES:
        entries = getattr(registry, kind)()
        click.echo(f"{kind}:")
        if not entries:
            click.echo("  (none)")
        for name in sorted(entries):
            entry = entries[name]
            desc = getattr(entry.obj, "description", "") or ""
            click.echo(f"  {name:<22} {desc}  [{entry.plugin}]".rstrip())


@cli.command()
def plugins():
    """List loaded plugins (in precedence order) with version, hooks, refusals and errors."""
    registry = get_registry()
    registry.collected()  # registration errors and refusals are recorded on the plugins
    for name, info in registry.plugins.items():
        version = f"{info.distribution} {info.version}" if info.distribution else "-"
        click.echo(f"{name}  ({version})  module={info.module}")
        click.echo(f"  hooks: {', '.join(info.hooks) or '-'}")
        for line in info.refused:
            click.echo(f"  refused: {line}")
        if info.error:
            click.echo(f"  error: {info.error}")


def _attach_plugin_commands() -> None:
    from crsbench.judge_commands import judge_group
    from crsbench.leaderboard import leaderboard_group

    cli.add_command(leaderboard_group, name="leaderboard")
    cli.add_command(judge_group(), name="judge")
    get_registry().add_commands(cli)


PATH_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR)


def main(argv=None) -> None:
    """Entry point: user mistakes end in one 'Error: ...' line and a non-zero exit."""
    _attach_plugin_commands()
    try:
        code = cli.main(args=argv, prog_name="crsbench", standalone_mode=False)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, EOFError):  # click turns an EOFError from anywhere into Abort
            click.echo(f"Error: a file ended early (truncated or damaged): {exc.__cause__}", err=True)
            sys.exit(2)
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        hint = f" (see 'crsbench {exc.ctx.command_path.split(' ', 1)[-1]} --help')" if exc.ctx and " " in exc.ctx.command_path else " (see 'crsbench --help')"
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except DegenerateRunError as exc:
        click.echo(f"Stopped: {exc}", err=True)
        sys.exit(3)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except OSError as exc:
        from crsbench.results import DISK_FULL_ERRNOS

        if exc.errno in PATH_ERRNOS:  # a path the user gave or the machine's permissions, not a bug
            click.echo(f"Error: cannot use {exc.filename or 'a file'}: {exc.strerror}", err=True)
            sys.exit(2)
        if exc.errno not in DISK_FULL_ERRNOS:
            raise
        # a full disk outside the atomic writers (a checkpoint, the partial predictions):
        # rerunning the same command once there is room resumes the run
        click.echo(f"Error: could not write {exc.filename or 'a file'}: {exc.strerror}", err=True)
        sys.exit(2)
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":  # a plugin's own load of a damaged weights file
            raise
        click.echo(f"Error: a safetensors checkpoint or cache file is damaged or truncated ({exc})", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
