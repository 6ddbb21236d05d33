"""User mistakes end in one clear 'Error:' line and a non-zero exit, never a traceback."""
import json
import subprocess
import sys

import pytest


def crsbench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "crsbench.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[crsbench]")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_model(tmp_path):
    proc = crsbench("run", "popularty", "--task", "redial", "--output-dir", str(tmp_path))
    assert_one_line_error(proc, "unknown model 'popularty'", "did you mean 'popularity'")


def test_unknown_task(tmp_path):
    proc = crsbench("run", "popularity", "--task", "nosuchtask", "--output-dir", str(tmp_path))
    assert_one_line_error(proc, "unknown task 'nosuchtask'", "redial")


def test_bad_option_value():
    assert_one_line_error(crsbench("run", "popularity", "--task", "redial", "--seed", "abc"), "--seed")


def test_unknown_option():
    assert_one_line_error(crsbench("run", "popularity", "--task", "redial", "--bogus"), "--bogus")


def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nothing-here"
    proc = crsbench("run", "popularity", "--task", "redial", "--data-dir", str(missing),
                    "--output-dir", str(tmp_path / "runs"))
    assert_one_line_error(proc, str(missing))


def test_unknown_config_key(tmp_path):
    proc = crsbench("run", "popularity", "--task", "redial", "--set", "nope=1", "--output-dir", str(tmp_path))
    assert_one_line_error(proc, "unknown config key 'nope'")


def test_nonpositive_limit(tmp_path):
    proc = crsbench("run", "popularity", "--task", "redial", "--limit", "0", "--output-dir", str(tmp_path))
    assert_one_line_error(proc, "--limit")


def test_not_a_run_dir(tmp_path):
    assert_one_line_error(crsbench("evaluate", str(tmp_path / "missing")), "no such run directory")


def test_malformed_predictions_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"task": "redial", "protocols": ["standard"], "seed": 0}))
    good = {"sample_id": "1:1", "dialog_id": "1", "targets": [], "context_items": [],
            "context_item_ranks": [], "top": [], "response": None, "reference": "", "hyp_items": 0}
    (run_dir / "predictions.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    assert_one_line_error(crsbench("evaluate", str(run_dir)), "predictions.jsonl:2", "not valid JSON")


def test_malformed_jsonl_in_data_dir(tmp_path):
    data = tmp_path / "redial-full"
    data.mkdir()
    src = __import__("crsbench_tasks.redial", fromlist=["x"]).__path__[0]
    import gzip
    import shutil
    from pathlib import Path

    with gzip.open(Path(src) / "data" / "movies_with_mentions.csv.gz", "rb") as fin, \
            open(data / "movies_with_mentions.csv", "wb") as fout:
        shutil.copyfileobj(fin, fout)
    with gzip.open(Path(src) / "data" / "test_data.jsonl.gz", "rt") as fin:
        lines = [next(fin) for _ in range(3)]
    (data / "test_data.jsonl").write_text("".join(lines))
    (data / "train_data.jsonl").write_text(lines[0] + '{"broken": \n')
    proc = crsbench("run", "popularity", "--task", "redial", "--data-dir", str(data),
                    "--output-dir", str(tmp_path / "runs"), "--n-bootstrap", "0")
    assert_one_line_error(proc, "train_data.jsonl:2")


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["list", "--help"]])
def test_help_exits_zero(args):
    proc = crsbench(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
