"""docs/gpu.md's "try the paper path on a CPU" block runs as written (in a scratch directory)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "gpu.md"
MARKER = "<!-- run by tests/test_docs_gpu.py -->"


def documented_block() -> str:
    text = DOC.read_text(encoding="utf-8")
    assert MARKER in text, f"{DOC} lost the block this test runs"
    match = re.search(r"```bash\n(.*?)```", text[text.index(MARKER):], re.S)
    assert match, "no bash block after the marker"
    return match.group(1)


@pytest.mark.slow
def test_paper_profile_cpu_block_runs_as_documented(tmp_path):
    block = documented_block()
    assert "--profile paper" in block and "/tmp/tiny" in block
    script = block.replace("/tmp/tiny", str(tmp_path / "tiny"))  # the only change: a private directory
    env = dict(os.environ, CRSBENCH_CACHE_DIR=str(tmp_path / "cache"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = list((tmp_path / "runs").glob("*/result.json"))
    assert len(results) == 1, proc.stdout[-2000:]
    result = json.loads(results[0].read_text())
    assert result["model"]["name"] == "unicrs" and result["model"]["profile"] == "paper"
    assert result["model"]["config"]["lm"]["backbone"] == str(tmp_path / "tiny" / "dialogpt-tiny")
    assert result["extra"]["stages"]["lm"]["trained"] is False
    assert "standard/recall@10" in result["metrics"]
