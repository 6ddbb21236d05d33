"""Nothing a plugin, a run directory or a result file holds escapes its place (issue 21,
"Security"): no symlink is followed into a report, no HTML or code fence comes through into
generated Markdown, no CSV cell is a formula, no run directory leaves --output-dir, no edited
result is published, and no judge server holds a request past its deadline."""
from __future__ import annotations

import csv
import http.server
import io
import json
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from crsbench.errors import UserError
from test_silent_results import QUICK, baseline_run, cli, copy_run, register_repeat_model

HOSTILE = "<img src=x onerror=alert(1)>`x`|"


def outside_code(md: str) -> str:
    """Markdown without its fenced blocks and code spans (whose content is shown literally)."""
    md = re.sub(r"^(`{3,})[^\n]*\n.*?\n\1$", "", md, flags=re.M | re.S)
    return re.sub(r"(?<!`)(`+)(?!`).*?(?<!`)\1(?!`)", "", md)


@pytest.fixture(scope="module")
def popularity_run(tmp_path_factory) -> Path:
    return baseline_run(tmp_path_factory.mktemp("runs"), "popularity", 5)


# -- report ---------------------------------------------------------------------------------------
def test_report_does_not_follow_symlinks_out_of_the_run(popularity_run, tmp_path):
    from crsbench.report import write_report

    run_dir = copy_run(popularity_run, tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:$6$hash:19000:0:99999:7:::\n")
    (run_dir / "checkpoints" / "sub").mkdir(parents=True)
    (run_dir / "checkpoints" / "loss.png").symlink_to(secret)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "other.png").write_bytes(b"\x89PNG not ours")
    (run_dir / "checkpoints" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (run_dir / "checkpoints" / "sub" / "curve.png").write_bytes(b"\x89PNG real curve")
    write_report([run_dir], tmp_path / "rep")
    copied = {p.name: p.read_bytes() for p in (tmp_path / "rep").rglob("*") if p.is_file()}
    assert copied.get("curve.png") == b"\x89PNG real curve"  # a real image is still copied
    assert "loss.png" not in copied and "other.png" not in copied
    assert not any(b"root:" in body for body in copied.values())


def test_report_markdown_escapes_names_and_replies(popularity_run, tmp_path):
    from crsbench.report import write_report

    run_dir = copy_run(popularity_run, tmp_path)
    result = json.loads((run_dir / "result.json").read_text())
    result["model"]["name"] = HOSTILE
    (run_dir / "result.json").write_text(json.dumps(result))
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    for row in rows:
        row["response"] = "sure!\n```\n<script>alert(1)</script>\n````\nafter the fence"
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report([run_dir], tmp_path / "rep", n_samples=2)
    md = (tmp_path / "rep" / "report.md").read_text()
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<img" not in outside_code(md) and "<script>" not in outside_code(md)  # no raw tag outside code
    blocks = md.split("`````text\n")
    assert len(blocks) == 3  # two sample blocks, each fenced longer than the reply's ````
    for block in blocks[1:]:
        inside, _, _ = block.partition("\n`````")
        assert "after the fence" in inside  # the reply's own fences did not close the block
    assert "<img" not in page and "<script>" not in page


# -- leaderboard ----------------------------------------------------------------------------------
def hostile_result(popularity_run) -> dict:
    result = json.loads((popularity_run / "result.json").read_text())
    result["model"]["name"] = HOSTILE
    result["model"]["version"] = "=HYPERLINK(\"http://x\")"
    result["task"]["data"]["variant"] = "a`b`` <b>bold</b>"
    return result


def test_leaderboard_markdown_escapes_html_and_backticks(popularity_run, tmp_path):
    from crsbench.leaderboard import build

    root = tmp_path / "lb"
    path = root / "results" / "redial" / "hostile.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(hostile_result(popularity_run)))
    md = build(root)[root / "redial.md"]
    body = md.split("\n", 1)[1]  # after the generated-file marker (an HTML comment)
    assert "<img" not in outside_code(body) and "<b>" not in outside_code(body)
    assert "&lt;img src=x onerror=alert(1)&gt;\\`x\\`\\|" in body
    heading = next(line for line in body.splitlines() if line.startswith("## redial"))
    assert "```a`b`` <b>bold</b>```" in heading  # a code span no backtick inside can close


def test_leaderboard_csv_cells_are_never_formulas(popularity_run, tmp_path):
    from crsbench.leaderboard import build

    root = tmp_path / "lb"
    path = root / "results" / "redial" / "hostile.json"
    path.parent.mkdir(parents=True)
    doc = hostile_result(popularity_run)
    doc["model"]["name"] = "@SUM(1+1)*cmd|' /C calc'!A0"
    path.write_text(json.dumps(doc))
    rows = list(csv.DictReader(io.StringIO(build(root)[root / "redial.csv"])))
    assert rows and all(row["model"] == "'@SUM(1+1)*cmd|' /C calc'!A0" for row in rows)
    assert all(row["model_version"] == "'=HYPERLINK(\"http://x\")" for row in rows)
    assert all(not row[k].startswith(("=", "+", "@")) for row in rows for k in row)
    assert any(float(row["value"]) >= 0 for row in rows)  # numbers stay numbers


# -- run directories ------------------------------------------------------------------------------
@pytest.fixture
def escaping_model(isolated_registry):
    return register_repeat_model(isolated_registry, "../../escape")


def test_a_model_name_cannot_write_outside_the_output_dir(escaping_model, tmp_path):
    from crsbench.runner import run

    out = tmp_path / "a" / "b" / "runs"
    out.mkdir(parents=True)
    with pytest.raises(UserError, match="cannot name a run directory"):
        run(escaping_model, "redial", limit=2, n_bootstrap=5, progress=False, output_dir=out, fresh=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == \
        [Path("a"), Path("a/b"), Path("a/b/runs")]


def test_fresh_deletes_only_a_crsbench_run_directory(tmp_path, capsys):
    out = tmp_path / "runs"
    name = "popularity_redial_default_s0_n2"
    (out / name).mkdir(parents=True)
    (out / name / "thesis.tex").write_text("years of work")
    args = ("run", "popularity", "--task", "redial", "--limit", "2", "--output-dir", out, "--fresh", *QUICK)
    code, err = cli(capsys, *args)
    assert code == 2 and "not a crsbench run directory" in err and "Traceback" not in err
    assert (out / name / "thesis.tex").read_text() == "years of work"

    shutil.rmtree(out / name)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "config.json").write_text("{}")
    (out / name).symlink_to(precious, target_is_directory=True)
    code, err = cli(capsys, *args)
    assert code == 2 and "symlink" in err
    assert (precious / "config.json").read_text() == "{}"


# -- publish --------------------------------------------------------------------------------------
def test_publish_refuses_a_result_edited_by_hand(popularity_run, tmp_path):
    from crsbench.leaderboard import publish
    from crsbench.results import document_sha256

    run_dir = copy_run(popularity_run, tmp_path)
    original = (run_dir / "result.json").read_text()
    result = json.loads(original)
    result["metrics"]["standard/recall@10"]["value"] = 0.99
    (run_dir / "result.json").write_text(json.dumps(result))
    with pytest.raises(UserError, match="edited after crsbench wrote it"):
        publish(run_dir, tmp_path / "lb")

    result["integrity"]["sha256"] = document_sha256(result)  # a forged digest: the predictions say otherwise
    (run_dir / "result.json").write_text(json.dumps(result))
    with pytest.raises(UserError, match="not what its predictions give.*standard/recall@10"):
        publish(run_dir, tmp_path / "lb")

    (run_dir / "result.json").write_text(original)
    rows = (run_dir / "predictions.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "predictions.jsonl").write_text("".join(reversed(rows)))  # other bytes, same samples
    with pytest.raises(UserError, match="not the predictions file"):
        publish(run_dir, tmp_path / "lb")
    assert not (tmp_path / "lb" / "results").exists()

    shutil.copyfile(popularity_run / "predictions.jsonl", run_dir / "predictions.jsonl")
    assert publish(run_dir, tmp_path / "lb").is_file()  # as crsbench wrote it: published


# -- the HTTP judge -------------------------------------------------------------------------------
SCORES = {"emotional_intensity": 5, "emotional_persuasiveness": 5, "logical_persuasiveness": 5,
          "informativeness": 5, "lifelikeness": 5}


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    state = {"mode": "ok"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"choices": [{"message": {"role": "assistant", "content": json.dumps(SCORES)}}]}).encode()
            try:
                if state["mode"] == "drip-body":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    for byte in body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.2)
                elif state["mode"] == "drip-headers":
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 200:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.2)
                elif state["mode"] == "huge":
                    self.send_response(200)
                    self.end_headers()  # no Content-Length: read until the cap
                    for _ in range(64):
                        self.wfile.write(b" " * (1 << 20))
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
            except OSError:
                pass  # the client gave up, as it should

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.block_on_close = False
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    yield state
    srv.shutdown()
    srv.server_close()


def judge_of(server, **options):
    from crsbench_plugins.judges.http import OpenAIJudge

    judge = OpenAIJudge(model="m", base_url=server["url"], api_key_env=None, rubric="ecr-subjective-v1",
                        max_retries=0, **options)
    judge._sleep = lambda seconds: None
    return judge


def score_one(judge):
    from crsbench.judge import JudgeInput

    started = time.monotonic()
    result = judge.score([JudgeInput(["any comedy?"], "try Airplane!")])[0]
    return result, time.monotonic() - started


def test_http_judge_answers_within_its_deadline(server):
    result, _ = score_one(judge_of(server, timeout=1, deadline=1.5))
    assert result.ok and result.scores == {k: float(v) for k, v in SCORES.items()}


@pytest.mark.parametrize("mode", ["drip-body", "drip-headers"])
def test_http_judge_gives_up_on_a_dripping_server_at_its_deadline(server, mode):
    server["mode"] = mode  # a byte every 0.2 s: no single read ever waits the 1 s timeout
    result, seconds = score_one(judge_of(server, timeout=1, deadline=1.5))
    assert not result.ok and "1.5s deadline" in result.error
    assert seconds < 4, seconds


def test_http_judge_does_not_read_a_huge_answer_whole(server):
    server["mode"] = "huge"
    judge = judge_of(server, timeout=5, max_response_bytes=1 << 20)
    result, seconds = score_one(judge)
    assert not result.ok and "max_response_bytes=1048576" in result.error
    assert judge.stats().get("retries", 0) == 0  # not worth another try


def test_http_judge_rejects_a_nonpositive_deadline():
    from crsbench_plugins.judges.http import OpenAIJudge

    with pytest.raises(UserError, match="deadline"):
        OpenAIJudge(model="m", base_url="http://127.0.0.1:9/v1", rubric="ecr-subjective-v1", deadline=0)

