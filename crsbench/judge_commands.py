"""``crsbench judge``: the command group over :mod:`crsbench.judge_validation`.

Apart from the records module because ``--publish`` rebuilds the leaderboard tables
(:mod:`crsbench.leaderboard`), and the leaderboard reads the records: the records module
imports neither.
"""
from __future__ import annotations

from pathlib import Path

from crsbench.errors import UserError
from crsbench.judge_validation import (RESULTS_SUBDIR, get_benchmark, record_filename, safe_name, score_run,
                                       summary_lines, validate_judge, write_validation)


def judge_group():
    """The ``crsbench judge`` command group (built on demand: click only, nothing heavy)."""
    import click

    @click.group("judge")
    def group():
        """Measure judges against human ratings (judge benchmarks such as crsarena-eval)."""

    common = [
        click.option("--benchmark", default=None, help="Judge benchmark (default: the only registered one)."),
        click.option("--data-dir", default=None, type=click.Path(),
                     help="The complete official data file, or a directory holding it (default: the bundled data)."),
        click.option("--output", default=None, type=click.Path(dir_okay=False),
                     help="Also write the record(s) here (several halves or rubrics: __<rubric>__<half> is added)."),
        click.option("--publish", is_flag=True,
                     help="Write the record(s) to <root>/results/judges/ and rebuild the leaderboard tables."),
        click.option("--root", default="leaderboards", show_default=True, type=click.Path(file_okay=False),
                     help="Leaderboard directory for --publish."),
        click.option("--n-bootstrap", default=1000, show_default=True, type=click.IntRange(0, None)),
        click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2 ** 32 - 1),
                     help="Seed of the bootstrap draws."),
    ]

    def with_common(fn):
        for option in reversed(common):
            fn = option(fn)
        return fn

    @group.command("validate")
    @click.argument("judge")
    @click.option("--judge-option", "judge_options", multiple=True, metavar="KEY=VALUE",
                  help="Judge option (repeatable), e.g. chat_template=false.")
    @click.option("--rubric", "rubrics", multiple=True,
                  help="Only this rubric (repeatable; default: every level's rubric of the benchmark).")
    @click.option("--limit", default=None, type=click.IntRange(1, None),
                  help="Only N units of each level: whole conversations in a fixed pseudo-random order, "
                       "so every system is sampled (a quick look; its records say so and rank below complete ones).")
    @click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1, None))
    @click.option("--no-progress", is_flag=True)
    @with_common
    def validate(judge, judge_options, rubrics, limit, batch_size, no_progress, benchmark, data_dir, output,
                 publish, root, n_bootstrap, seed):
        """Score every human-rated turn and dialogue with JUDGE; report its agreement with people."""
        from crsbench.judge_eval import parse_judge_options

        bench = get_benchmark(benchmark)
        _check_data_dir(data_dir)
        options = parse_judge_options(judge_options)
        if "rubric" in options:
            raise UserError("the benchmark sets the judge's rubric per level; pick one with --rubric, "
                            "not --judge-option rubric=...")
        records = validate_judge(judge, options, benchmark=bench, rubrics=rubrics,
                                 data_path=data_dir, limit=limit, n_bootstrap=n_bootstrap, seed=seed,
                                 batch_size=batch_size, progress=not no_progress)
        _emit(records, output, publish, root)

    @group.command("score-run")
    @click.argument("run_file", type=click.Path())
    @click.option("--name", default=None, help="The evaluator's name in the record (default: the file's stem).")
    @click.option("--judge-id", default=None,
                  help="Record the predictions under this judge id (a learned judge's held-out predictions).")
    @click.option("--rubric", default=None, help="With --judge-id: the judge's rubric; only its level is scored.")
    @click.option("--split", default="all", show_default=True,
                  help="How the predictions were made, e.g. 'grouped 5-fold CV by conversation' (held-out protocol).")
    @with_common
    def score_run_command(run_file, name, judge_id, rubric, split, benchmark, data_dir, output, publish, root,
                          n_bootstrap, seed):
        """Score RUN_FILE, predictions in the benchmark's run format (FACE's for crsarena-eval)."""
        bench = get_benchmark(benchmark)
        _check_data_dir(data_dir)
        if not Path(run_file).is_file():
            raise UserError(f"{run_file}: no such run file")
        records = score_run(run_file, benchmark=bench, name=name, data_path=data_dir, n_bootstrap=n_bootstrap,
                            seed=seed, judge_id=judge_id, rubric=rubric, split=split)
        _emit(records, output, publish, root)

    return group


def _check_data_dir(data_dir):
    if data_dir is not None and not Path(data_dir).exists():
        raise UserError(f"--data-dir {data_dir}: no such file or directory")


def _emit(records: list[dict], output, publish: bool, root) -> None:
    import click

    for record in records:
        click.echo("\n".join(summary_lines(record)))
        click.echo("")
    if output:
        for record in records:
            path = Path(output)
            if len(records) > 1:
                path = path.with_name(f"{path.stem}__{safe_name(record['rubric'])}__"
                                      f"{safe_name(record['data']['half'])}{path.suffix or '.json'}")
            click.echo(f"wrote {write_validation(record, path)}")
    if publish:
        from crsbench import leaderboard

        for record in records:
            click.echo(f"published {write_validation(record, Path(root) / RESULTS_SUBDIR / record_filename(record))}")
        leaderboard.write(root)
        click.echo(f"tables rebuilt under {root}")
