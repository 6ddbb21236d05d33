"""`crsbench run`: train (if the model trains), predict, score, write the run directory."""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from crsbench.config import apply_overrides
from crsbench.errors import DegenerateRunError, UserError, require_writable_dir
from crsbench.judge_eval import parse_judge_options  # also the CLI's, from here
from crsbench.plugins import get_registry, lookup
from crsbench import distributed
from crsbench.results import RESULT_FILE, build_result, seal, write_json_atomic
from crsbench.task import task_defaults
from crsbench.runs import (CONFIG_FILE, ITEM_NAMES_FILE, PARTIAL_PREDICTIONS_FILE, PREDICTIONS_FILE, RunLock,
                           config_overrides, describe_differences, read_config, remove_run_dir, run_name,
                           write_jsonl_atomic)

log = logging.getLogger("crsbench")
DEFAULT_BOOTSTRAP = 1000


def resolve_device(device: str) -> str:
    from crsbench.devices import check_device_name

    if check_device_name(device) != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _setup_logging(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("crsbench")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    # Our console handler prints every line once; a library that configured the root logger
    # (logging.basicConfig) would print it a second time as "INFO:crsbench:...".
    root.propagate = False
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in root.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("[crsbench] %(message)s"))
        root.addHandler(console)
    return handler


def run_identity(registry, model_entry, task_entry, task) -> dict:
    """What a run's checkpoints and predictions depend on besides its config: the task's name,
    version and data (variant, sha256 of its files, preprocessing version), the model's name and
    version, and the distribution versions of the model's and the task's plugins. A resume
    reuses a run directory only when this is unchanged (see :func:`prepare_run_dir`)."""
    info = task.data_info() or {}
    data = {k: info[k] for k in ("variant", "sha256", "preprocess_version", "split_rule") if k in info}

    def package(entry):
        prov = registry.provenance(entry.plugin)
        return f"{prov['distribution']} {prov['version']}" if prov.get("distribution") else f"entry point {entry.plugin}"

    return {"task": {"name": task_entry.name, "version": str(task_entry.obj.version), "data": data},
            "model": {"name": model_entry.name, "version": str(model_entry.obj.version)},
            "plugins": {"model": package(model_entry), "task": package(task_entry)}}


def prepare_run_dir(run_dir: Path, config: dict, fresh: bool, output_dir: Path | None = None) -> None:
    """Create the run directory, or resume in it when it was made by the same config and run
    identity (task, data, model and plugin versions); anything else is refused with what differs."""
    if fresh:
        remove_run_dir(run_dir, output_dir if output_dir is not None else run_dir.parent)
    if run_dir.is_symlink():
        raise UserError(f"{run_dir} is a symlink; a run directory must be a real directory")
    if (run_dir / CONFIG_FILE).exists():
        previous = read_config(run_dir)
        config = json.loads(json.dumps(config))  # as config.json holds it (a tuple reads back as a list)
        if previous != config:
            diffs = describe_differences({k: v for k, v in previous.items() if k != "identity"},
                                         {k: v for k, v in config.items() if k != "identity"})
            diffs[:0] = (describe_differences(previous["identity"], config["identity"], "identity.")
                         if isinstance(previous.get("identity"), dict) else
                         ["it records no run identity (made by an older crsbench), so its task data, model "
                          "and plugin versions cannot be checked"])
            shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
            raise UserError(f"{run_dir} holds a run with a different configuration ({shown}), so its "
                            "checkpoints and predictions are not reused; pass --output-dir DIR to run "
                            f"elsewhere and keep it (--fresh would delete {run_dir} and that run)")
        log.info("resuming in %s", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / CONFIG_FILE, config)


def run(model_name: str, task_name: str, *, profile: str | None = None, seed: int = 0,
        output_dir: str | Path = "runs", limit: int | None = None, device: str = "auto",
        data_dir: str | None = None, overrides: tuple[str, ...] = (), n_bootstrap: int = DEFAULT_BOOTSTRAP,
        batch_size: int = 64, fresh: bool = False, progress: bool = True, judge: str | None = None,
        judge_options: tuple[str, ...] = (), judge_sample: int = 100) -> Path:
    from crsbench.evaluation import failed_metric_notes, predict, score_records
    from crsbench.model import RunContext
    from crsbench.seeding import seed_everything

    from crsbench.provenance import plugins_used, require_metrics

    from crsbench.results import git_state
    from crsbench.task import resolve_data_dir
    from crsbench.task_check import require_usable

    started = time.perf_counter()
    git = git_state()  # the code this run imports is the code of now, whatever changes meanwhile
    registry = get_registry()
    registry.used = {}  # this run's lookups only
    model_entry, task_entry = lookup("models", model_name), lookup("tasks", task_name)
    model_cls, task_cls = model_entry.obj, task_entry.obj
    require_metrics(registry, model_cls.generates)
    if limit is not None and limit <= 0:
        raise UserError("--limit must be a positive number of test dialogues")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise UserError(f"--seed {seed}: a seed is a whole number from 0 to {2 ** 32 - 1}")
    device = resolve_device(device)
    profile = profile or model_cls.default_profile(device)
    if profile not in model_cls.profiles:
        raise UserError(f"model {model_name!r} has no profile {profile!r} "
                        f"(profiles: {', '.join(model_cls.profiles)})")
    model_config = apply_overrides(model_cls.profiles[profile], overrides, getattr(model_cls, "config_schema", None),
                                   model_cls.profiles.values())
    judge_opts = parse_judge_options(judge_options)
    default = model_cls.default_judge(model_config) if judge is None else None
    if default:
        judge = default["name"]
        judge_opts = {**{k: v for k, v in default.items() if k != "name"}, **judge_opts}
    if judge is not None:
        if not model_cls.generates:
            raise UserError(f"--judge: model {model_name!r} does not generate replies")
        lookup("judges", judge)

    data_dir = resolve_data_dir(task_cls, data_dir)  # --data-dir, else $CRSBENCH_DATA_<TASK>
    task = task_cls(data_dir=data_dir)
    identity = run_identity(registry, model_entry, task_entry, task)
    overrides = config_overrides(model_cls.profiles[profile], model_config)
    run_dir = Path(output_dir) / run_name(model_name, task_name, profile, seed, limit,
                                          identity["task"]["data"].get("sha256", "unknown") if data_dir else None,
                                          overrides)
    config = {"model": model_name, "task": task_name, "profile": profile, "seed": seed, "limit": limit,
              "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
              "model_config": model_config, "protocols": list(task_cls.protocols), "n_bootstrap": n_bootstrap,
              "identity": identity,
              **({"judge": judge, "judge_options": judge_opts, "judge_sample": judge_sample} if judge else {})}
    if distributed.world_size() > 1 and model_cls.multi_process is not True:
        raise UserError(f"model {model_name!r} cannot train in {distributed.world_size()} processes: "
                        f"{model_cls.multi_process or 'it trains in one process only'}")
    if distributed.world_size() > 1:  # under accelerate launch: every process trains, rank 0 writes
        distributed.init(device)
        if not distributed.is_main():
            distributed.barrier()  # rank 0 prepares the run directory first
            return _train_only(model_cls, model_config, task, limit, run_dir, seed, device, profile, progress)
    require_writable_dir(output_dir, "--output-dir")
    lock = RunLock(run_dir).acquire()  # before anything is written there
    try:
        prepare_run_dir(run_dir, config, fresh, Path(output_dir))
        handler = _setup_logging(run_dir)
    except BaseException:
        lock.release()
        raise
    finally:
        distributed.barrier()
    try:
        if distributed.world_size() > 1:
            log.info("%d processes train; this one (rank 0) writes, predicts and scores", distributed.world_size())
        for line in registry.refusals():  # a name another plugin claimed first never runs here
            log.warning("%s", line)
        seed_everything(seed)
        timings = {}
        t0 = time.perf_counter()
        data = task.load(limit=limit)
        task_defaults(data, task)
        for finding in require_usable(data, task_name, task_cls.has_feedback):  # else one Error line
            log.warning("task data: %s", finding)
        timings["load"] = time.perf_counter() - t0
        test = list(data.splits["test"])
        log.info("task %s v%s: %d test samples, %d catalogue items", task_name, task_cls.version,
                 len(test), len(data.items))

        context = RunContext(run_dir=run_dir, seed=seed, device=device, profile=profile, logger=log,
                             progress=progress, judge={"name": judge, **judge_opts} if judge else None)
        model = model_cls(model_config, context)
        t0 = time.perf_counter()
        task_info = {"name": task_name, "version": task_cls.version, "protocols": list(task_cls.protocols),
                     "data": task.data_info()}
        model_info = {"name": model_name, "version": model_cls.version, "plugin": model_entry.plugin,
                      "distribution": registry.provenance(model_entry.plugin)["distribution"],
                      "distribution_version": registry.provenance(model_entry.plugin)["version"],
                      "profile": profile, "config": model_config, "overrides": overrides,
                      "generates": model_cls.generates}
        try:
            model.fit(data)
        except DegenerateRunError as exc:
            # A guard stopped training: the reason goes into the result file (no metrics).
            timings["fit"] = time.perf_counter() - t0
            write_json_atomic(run_dir / RESULT_FILE, build_result(
                task=task_info, model=model_info, seeds={"run": seed, "bootstrap": seed}, evaluation={},
                metrics={}, timings=timings, device=device, notes=[f"stopped: {exc}"],
                plugins=plugins_used(registry, model=model_name, task=task_name, metric_keys=()),
                extra={"stopped": str(exc)}, git=git))
            log.error("stopped: %s", exc)
            raise
        timings["fit"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        records = predict(model, test, data.items, find_items=task.find_items, batch_size=batch_size,
                          progress=progress, partial=run_dir / PARTIAL_PREDICTIONS_FILE,
                          item_placeholder=data.item_placeholder)
        for record, sample in zip(records, test):
            record["context"] = list(sample["context"])
            record["context_roles"] = list(sample.get("context_roles") or [])
        timings["predict"] = time.perf_counter() - t0
        judged = None
        if judge is not None:
            from crsbench.judge_eval import judge_records, make_judge

            t0 = time.perf_counter()
            judged = judge_records(records, make_judge(judge, {"rubric": data.default_rubric, **judge_opts}),
                                   judge_sample, seed, progress=progress)
            timings["judge"] = time.perf_counter() - t0
        write_jsonl_atomic(run_dir / PREDICTIONS_FILE, records)
        (run_dir / PARTIAL_PREDICTIONS_FILE).unlink(missing_ok=True)
        write_json_atomic(run_dir / ITEM_NAMES_FILE, {str(k): v for k, v in data.item_names.items()})

        t0 = time.perf_counter()
        metrics = score_records(records, get_registry().metrics_objects(), task_cls.protocols,
                                n_boot=n_bootstrap, seed=seed)
        timings["score"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - started

        notes = [] if model_cls.generates else [
            f"{model_name} does not generate responses: no generation metrics are reported"]
        notes += subset_notes(limit, profile, overrides)
        notes += failed_metric_notes(metrics)
        result = build_result(
            task=task_info, model=model_info,
            seeds={"run": seed, "bootstrap": seed},
            evaluation=evaluation_summary(records, task_cls.protocols, n_bootstrap, limit, metrics),
            metrics=metrics, timings=timings, device=device, notes=notes,
            plugins=plugins_used(registry, model=model_name, task=task_name, metric_keys=metrics,
                                 judges=[judge] if judge else ()),
            extra={**model.result_extra(), **({"judge": judged} if judged else {})}, git=git)
        seal(result, run_dir / PREDICTIONS_FILE)
        write_json_atomic(run_dir / RESULT_FILE, result)
        log.info("wrote %s", run_dir / RESULT_FILE)
        return run_dir
    finally:
        logging.getLogger("crsbench").removeHandler(handler)
        handler.close()
        lock.release()


def _train_only(model_cls, model_config, task, limit, run_dir, seed, device, profile, progress) -> Path:
    """A process other than rank 0: train in step with the others, write nothing, evaluate nothing."""
    from crsbench.model import RunContext
    from crsbench.seeding import seed_everything

    seed_everything(seed)
    data = task.load(limit=limit)
    task_defaults(data, task)
    context = RunContext(run_dir=run_dir, seed=seed, device=device, profile=profile, logger=log, progress=False)
    model_cls(model_config, context).fit(data)
    return run_dir


def subset_notes(limit, profile: str, overrides: dict) -> list[str]:
    """Notes that mark a result as not a full-split, default-configuration measurement."""
    notes = []
    if limit:
        notes.append(f"evaluated on the first {limit} test dialogues only (--limit {limit}): "
                     "not comparable with full-split results")
    if profile == "smoke":
        notes.append("profile 'smoke' is a quick pipeline check, not a measurement")
    if overrides:
        notes.append("configuration overridden with --set: " +
                     ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(overrides.items())))
    return notes


def evaluation_summary(records, protocols, n_bootstrap, limit, metrics) -> dict:
    from crsbench.protocols import evaluated_ranks
    from crsbench.runs import short_digest

    return {
        "split": "test", "n_bootstrap": n_bootstrap, "ci_level": 0.95, "resampling": "dialogue",
        "n_samples": len(records), "n_dialogs": len({r["dialog_id"] for r in records}),
        "sample_ids_sha256": short_digest(sorted(str(r["sample_id"]) for r in records), 64),
        "n_rec_samples": sum(1 for r in records if r["targets"]),
        "n_targets": {p: sum(len(evaluated_ranks(p, r)) for r in records) for p in protocols},
        "n_responses": sum(1 for r in records if r.get("response") is not None), "limit": limit,
    }


def rescore(run_dir: Path, n_bootstrap: int | None = None, judge: str | None = None,
            judge_options: dict | None = None, judge_sample: int = 100, progress: bool = True) -> dict:
    """Re-score a run's stored predictions (no model involved) and rewrite its result file.

    With ``judge``, the stored replies of a seeded sample of test dialogues are judged first
    (the same sample ``crsbench run --judge`` uses), so an existing run can be compared with
    a judged one without re-running its model.
    """
    with RunLock(run_dir):
        return _rescore(run_dir, n_bootstrap, judge, judge_options, judge_sample, progress)


def _rescore(run_dir, n_bootstrap, judge, judge_options, judge_sample, progress) -> dict:
    from crsbench.evaluation import score_records, validate_records
    from crsbench.results import read_result
    from crsbench.runs import read_jsonl

    config = read_config(run_dir)
    records = read_jsonl(run_dir / PREDICTIONS_FILE)
    validate_records(records, run_dir / PREDICTIONS_FILE)
    result_path = run_dir / RESULT_FILE
    previous = read_result(result_path) if result_path.exists() else None
    if previous is not None:
        _require_same_samples(previous, records, run_dir)
    judged = None
    if judge is not None:
        from crsbench.judge_eval import judge_records, make_judge

        if not any(r.get("response") is not None for r in records):
            raise UserError(f"{run_dir}: the run has no replies to judge")
        task_entry = get_registry().tasks().get(config["task"])
        rubric = getattr(task_entry.obj, "default_rubric", None) if task_entry else None
        judged = judge_records(records, make_judge(judge, {"rubric": rubric, **(judge_options or {})}),
                               judge_sample, config["seed"],
                               progress=progress)
        write_jsonl_atomic(run_dir / PREDICTIONS_FILE, records)
    n_bootstrap = config.get("n_bootstrap", DEFAULT_BOOTSTRAP) if n_bootstrap is None else n_bootstrap
    metrics = score_records(records, get_registry().metrics_objects(), config["protocols"],
                            n_boot=n_bootstrap, seed=config["seed"])
    if previous is not None:
        result = previous
        result["metrics"] = metrics
        if result.get("plugins") is not None:  # the metric plugins of this scoring
            from crsbench.provenance import plugins_used

            now = plugins_used(get_registry(), model=None, task=None, metric_keys=metrics,
                               judges=[judge] if judge else ())
            result["plugins"]["metrics"] = now["metrics"]
            if judge:
                result["plugins"]["judges"] = now["judges"]
                result["plugins"]["rubrics"] = now["rubrics"]
        if judged:
            result.setdefault("extra", {})["judge"] = judged
        result["evaluation"] = evaluation_summary(records, config["protocols"], n_bootstrap,
                                                  config.get("limit"), metrics)
        result["rescored"] = rescoring_record()
        write_json_atomic(result_path, seal(result, run_dir / PREDICTIONS_FILE))
    return metrics


def _require_same_samples(result: dict, records: list[dict], run_dir: Path) -> None:
    """Stored predictions that are not the ones the result was computed from (truncated, emptied,
    other samples) would silently replace its metrics: refuse them."""
    from crsbench.runs import short_digest

    evaluation = result.get("evaluation") or {}
    expected, digest = evaluation.get("n_samples"), evaluation.get("sample_ids_sha256")
    found = short_digest(sorted(str(r["sample_id"]) for r in records), 64)
    if (expected is not None and expected != len(records)) or (digest is not None and digest != found):
        raise UserError(f"{run_dir / PREDICTIONS_FILE} holds {len(records)} samples, not the {expected} test "
                        f"samples {RESULT_FILE} was computed from (truncated or replaced?); "
                        f"{RESULT_FILE} is unchanged")


def rescoring_record() -> dict:
    """Who re-scored a result's stored predictions: this crsbench and its libraries (the run's
    own ``environment`` stays as the run recorded it)."""
    from datetime import datetime, timezone

    from crsbench import __version__
    from crsbench.results import git_state, library_versions

    return {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "crsbench_version": __version__,
            "libraries": library_versions(), "git": git_state()}


def dump_config(config: dict) -> str:
    return json.dumps(config, indent=2, sort_keys=True)
