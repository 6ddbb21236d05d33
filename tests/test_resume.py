"""Runs that survive a kill, refuse a concurrent twin, and keep their last result on a full disk.

A real ``crsbench run ecr --profile smoke`` subprocess is killed with SIGKILL mid-stage, its
rerun is killed mid-prediction, and a third run of the same command finishes; its metrics
and predictions must equal those of an uninterrupted run with the same seed. Two test hooks
pause the run so each kill lands where intended: ``CRSBENCH_TEST_EPOCH_DELAY`` (between
the training epochs of an ECR stage) and ``CRSBENCH_TEST_PREDICT_DELAY`` (after each prediction batch).
The ECR runs train on 120 samples (``--set max_train_samples=120``) to keep this file fast;
every stage still runs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = "import sys; from crsbench.cli import main; main(sys.argv[1:])"
RUN = ["run", "ecr", "--task", "redial", "--profile", "smoke", "--limit", "6", "--n-bootstrap", "20",
       "--device", "cpu", "--no-progress", "--batch-size", "16", "--set", "max_train_samples=120"]

def _run_name() -> str:
    """The run directory the command above writes (its --set gives the name a digest suffix)."""
    from crsbench.config import apply_overrides
    from crsbench.runs import config_overrides, run_name
    from crsbench_plugins.ecr.model import ECRModel

    profile = ECRModel.profiles["smoke"]
    overrides = config_overrides(profile, apply_overrides(profile, [RUN[-1]]))
    return run_name("ecr", "redial", "smoke", 0, 6, None, overrides)


RUN_NAME = _run_name()


def env(**extra) -> dict:
    out = {k: v for k, v in os.environ.items() if k not in ("CRSBENCH_PLUGINS",)}
    out.update({k: str(v) for k, v in extra.items()})
    return out


def start(out_dir: Path, **extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLI, *RUN, "--output-dir", str(out_dir)], env=env(**extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(out_dir: Path, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *RUN, "--output-dir", str(out_dir)], env=env(**extra),
                          capture_output=True, text=True, timeout=900)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the kill point:\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the kill point was never reached")
        time.sleep(0.05)


def log_has(run_dir: Path, text: str):
    def check():
        log = run_dir / "log.txt"
        return log.exists() and text in log.read_text(encoding="utf-8")
    return check


def metrics(run_dir: Path) -> dict:
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    return {key: cell["value"] for key, cell in result["metrics"].items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole")
    proc = finish(out)
    assert proc.returncode == 0, proc.stderr
    return out / RUN_NAME


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_mid_stage_and_mid_prediction_then_rerun_gives_the_same_metrics(uninterrupted, tmp_path):
    run_dir = tmp_path / RUN_NAME
    stage2 = run_dir / "checkpoints" / "stage2_recommendation"

    # 1. killed in stage 2 (of 2 epochs): epoch 1 saved, epoch 2 not started (the hook pauses)
    proc = start(tmp_path, CRSBENCH_TEST_EPOCH_DELAY=60)
    wait_for((stage2 / "epoch-1" / "state.json").exists, proc)
    kill(proc)
    assert not (stage2 / "done.json").exists() and not (run_dir / "result.json").exists()

    # 2. the same command resumes stage 2, trains stage 3, and is killed after the first
    #    prediction batch is stored
    partial = run_dir / "predictions.partial.jsonl"
    proc = start(tmp_path, CRSBENCH_TEST_PREDICT_DELAY=60)
    wait_for(lambda: partial.exists() and partial.read_bytes().count(b"\n") >= 1, proc)
    kill(proc)
    log = (run_dir / "log.txt").read_text(encoding="utf-8")
    assert "stage1: already trained" in log and "stage2: resuming after epoch 1" in log
    assert (run_dir / "checkpoints" / "responses" / "done").exists()
    assert not (run_dir / "result.json").exists() and not (run_dir / "predictions.jsonl").exists()
    with open(partial, "a", encoding="utf-8") as fh:
        fh.write('{"pass": "rec", "batch": 1, "idx": [4')  # a line torn by the kill: dropped on resume

    # 3. the same command again: training all loaded, prediction resumes after batch 1
    rerun = finish(tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    log = (run_dir / "log.txt").read_text(encoding="utf-8")
    assert "stage2: already trained" in log and "prediction: resuming after 1 of " in log
    assert not partial.exists()
    assert metrics(run_dir) == metrics(uninterrupted)

    # ECR's CPU training is not bitwise reproducible across processes (weights differ in the
    # last bits, metrics do not), so the records are compared with a run from the same
    # weights: once more, every stage loaded, prediction from the first batch
    resumed = (run_dir / "predictions.jsonl").read_bytes()
    again = finish(tmp_path)
    assert again.returncode == 0, again.stderr
    assert (run_dir / "predictions.jsonl").read_bytes() == resumed


POPULARITY = ["run", "popularity", "--task", "redial", "--limit", "5", "--n-bootstrap", "10", "--no-progress",
              "--batch-size", "8"]


def test_a_second_run_into_the_same_directory_is_refused(tmp_path):
    from crsbench.runs import RunLock

    command = [sys.executable, "-c", CLI, *POPULARITY, "--output-dir", str(tmp_path)]
    run_dir = tmp_path / "popularity_redial_default_s0_n5"
    with RunLock(run_dir):  # held by this process, through the public helper
        held = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env())
    assert held.returncode == 2
    assert held.stderr.strip().splitlines() == [
        f"Error: another crsbench run (pid {os.getpid()}) is using {run_dir}; "
        "wait for it to finish or pass --output-dir to run elsewhere"]
    assert not run_dir.exists()  # refused before writing anything

    # two real runs at once: the second is refused, the first finishes undisturbed
    first = subprocess.Popen(command, env=env(CRSBENCH_TEST_PREDICT_DELAY=3), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (run_dir / "predictions.partial.jsonl").exists(), first)
    second = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env())
    assert second.returncode == 2 and f"another crsbench run (pid {first.pid})" in second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    assert result["evaluation"]["limit"] == 5 and result["metrics"]["standard/recall@50"]["n"] > 0
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env())
    assert again.returncode == 0, again.stderr  # the lock went with its process


FULL_DISK = """
import json, resource, signal, sys
from crsbench.results import write_json_atomic
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    write_json_atomic(sys.argv[1], {"metrics": {"x" * 64 + str(i): i for i in range(2000)}})
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""


def test_a_full_disk_leaves_the_previous_result_intact(tmp_path):
    import errno

    from crsbench.results import write_json_atomic

    target = tmp_path / "result.json"
    write_json_atomic(target, {"metrics": {"standard/recall@10": 0.25}})
    before = target.read_bytes()
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(target)], capture_output=True, text=True,
                          timeout=120, env=env())
    assert proc.returncode == 0, proc.stderr
    error = json.loads(proc.stdout)  # the write really failed, and says so clearly
    assert error["error"] == "UserError" and error["message"] == \
        f"could not write {target}: {os.strerror(errno.EFBIG)}; the previous result.json is unchanged"
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temp file left


FULL_DISK_CLI = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from crsbench.cli import main
main(sys.argv[1:])
"""


def test_a_full_disk_during_evaluate_is_one_error_line(tmp_path, run_crsbench):
    proc = run_crsbench("run", "popularity", "--task", "redial", "--limit", "5", "--n-bootstrap", "10",
                        "--no-progress", "--output-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "popularity_redial_default_s0_n5"
    before = (run_dir / "result.json").read_bytes()
    assert len(before) > 4096  # so rewriting it must fail under the limit
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_CLI, "evaluate", str(run_dir)],
                          capture_output=True, text=True, timeout=300, env=env())
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"Error: could not write {run_dir / 'result.json'}: File too large; the previous result.json is unchanged"]
    assert (run_dir / "result.json").read_bytes() == before


class Counting:
    """A tiny generating model that records which samples it was asked about."""

    name, generates, resumable_predictions = "counting", True, True

    def __init__(self):
        self.calls = []

    def recommend(self, batch):
        self.calls += [("rec", s["sample_id"]) for s in batch]
        return [[(7 * int(s["sample_id"]) + k) % 50 for k in range(50)] for s in batch]

    def generate(self, batch):
        self.calls += [("gen", s["sample_id"]) for s in batch]
        return [f"reply {s['sample_id']} <movie>" for s in batch]


SAMPLES = [{"sample_id": str(i), "dialog_id": f"d{i // 3}", "context_items": [i % 5], "response": "ref",
            "targets": [i % 50] if i % 4 else [], "target_feedback": ["liked"] if i % 4 else []}
           for i in range(23)]


def test_prediction_resumes_after_the_stored_batches_and_trusts_nothing_else(tmp_path):
    from crsbench.evaluation import predict

    partial = tmp_path / "predictions.partial.jsonl"
    whole = predict(Counting(), SAMPLES, list(range(50)), batch_size=4, progress=False, partial=partial)
    lines = partial.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 5 + 6  # 17 samples with targets in batches of 4, then 23 replies

    # killed after 7 batches, the 8th torn: only the rest is predicted, the records are the same
    partial.write_text("".join(lines[:7]) + lines[7][:40], encoding="utf-8")
    model = Counting()
    assert predict(model, SAMPLES, list(range(50)), batch_size=4, progress=False, partial=partial) == whole
    assert model.calls == [("gen", str(i)) for i in range(8, 23)]
    assert partial.read_text(encoding="utf-8") == "".join(lines)  # the torn line was cut, not kept

    # a rerun with another batch size, or a model that cannot resume, starts over
    for model, size in ((Counting(), 5), (type("Stateful", (Counting,), {"resumable_predictions": False})(), 4)):
        partial.write_text("".join(lines[:7]), encoding="utf-8")
        assert predict(model, SAMPLES, list(range(50)), batch_size=size, progress=False, partial=partial) == whole
        assert len(model.calls) == 17 + 23


def test_a_full_disk_during_prediction_is_one_error_line_and_the_rerun_completes(tmp_path, run_crsbench):
    command = ["run", "popularity", "--task", "redial", "--limit", "5", "--n-bootstrap", "10", "--no-progress",
               "--batch-size", "4"]
    clean = run_crsbench(*command, "--output-dir", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    run_dir = tmp_path / "full" / "popularity_redial_default_s0_n5"
    # the limit lets config.json and log.txt through but not the partial predictions file
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_CLI.replace("4096", "3000"), *command,
                           "--output-dir", str(tmp_path / "full")], capture_output=True, text=True, timeout=300,
                          env=env())
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"Error: could not write {run_dir / 'predictions.partial.jsonl'}: File too large; the batches "
        "before it are kept and a rerun of the same command resumes after them")
    assert "Traceback" not in proc.stderr
    stored = (run_dir / "predictions.partial.jsonl").read_bytes()
    assert 0 < stored.count(b"\n") and not stored.endswith(b"\n")  # some batches, then a torn one

    rerun = run_crsbench(*command, "--output-dir", tmp_path / "full")
    assert rerun.returncode == 0, rerun.stderr
    assert "prediction: resuming after" in (run_dir / "log.txt").read_text(encoding="utf-8")
    assert metrics(run_dir) == metrics(tmp_path / "clean" / run_dir.name)
