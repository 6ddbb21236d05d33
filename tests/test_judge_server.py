"""The ``openai`` judge against a real OpenAI-compatible server: llama-cpp-python's
``python -m llama_cpp.server`` serving the bundled SmolLM2 GGUF on 127.0.0.1 (started and
stopped by a module fixture), directly and behind a fault-injecting proxy.

- ``digit-expectation`` through the server matches the in-process ``smollm2`` judge with
  ``chat_template=false`` on real ReDial pairs within ``TOLERANCE`` (docs/judges.md has the
  measured numbers), with a high rank correlation;
- the default JSON method returns scores or counted parse failures, never a silent score;
- 5xx, timeouts, malformed bodies and answers without a digit from the proxy are retried
  or failed, and counted; a pair that eventually succeeds scores as without the proxy.

Needs ``llama-cpp-python[server]`` (``make install-judge-server``; CI installs it). Marked
``slow``; without the package the tests are skipped with a message saying how to install it,
and ``CRSBENCH_REQUIRE_JUDGE_SERVER=1`` (set by .ci/run) turns that skip into a failure.
"""
from __future__ import annotations

import http.server
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from crsbench.judge import JudgeInput, JudgeScore
from crsbench_plugins.judges.http import OpenAIJudge

pytestmark = pytest.mark.slow

# Agreement with the in-process judge (0-9 scale). Measured on the first 20 ReDial test pairs:
# max |diff| 0.37, mean 0.12, Spearman 0.92 (docs/judges.md): a different tokenisation at one
# boundary (mean 0.10 alone) and llama.cpp's Q4_1 arithmetic against transformers' float32
# de-quantised weights (mean 0.08 alone). Tolerances leave a margin over that.
N_PAIRS = 10               # real ReDial test pairs (x 5 metrics)
TOLERANCE_MAX = 0.6        # largest |server - in-process| allowed
TOLERANCE_MEAN = 0.2       # mean |server - in-process| allowed
MIN_SPEARMAN = 0.75        # rank correlation over the N_PAIRS x 5 scores
SERVER_START_TIMEOUT = 180
PROXY_ENV = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
INSTALL_HINT = ("llama-cpp-python[server] is not installed: run `make install-judge-server` (builds "
                "llama.cpp from source, several minutes on 2 cores) to run the judge-server tests")


def _server_missing() -> str | None:
    for module in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            return f"{INSTALL_HINT} (missing module {module})"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    def __init__(self, base_url: str, process: subprocess.Popen, log_path):
        self.base_url, self.process, self.log_path = base_url, process, log_path

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _warm_up(server: LlamaServer) -> None:
    """One tiny completion: a build whose CPU code cannot run here dies on the first request,
    not on /models."""
    body = json.dumps({"model": "smollm2", "prompt": "Score (0-9): ", "max_tokens": 1, "logprobs": 5}).encode()
    request = urllib.request.Request(server.base_url + "/completions", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            json.loads(response.read())["choices"][0]["logprobs"]["top_logprobs"]
    except Exception as exc:
        time.sleep(0.5)
        pytest.fail(f"llama_cpp.server failed its first completion ({type(exc).__name__}: {exc}; exit code "
                    f"{server.process.poll()}). A crash in libggml-cpu usually means a -march=native build "
                    f"using CPU features this machine cannot run (AMX in a VM): reinstall with "
                    f"`make install-judge-server`, which builds for a portable AVX2 target.\n{server.log_tail()}")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    missing = _server_missing()
    if missing:
        if os.environ.get("CRSBENCH_REQUIRE_JUDGE_SERVER") == "1":
            pytest.fail(missing + "; CRSBENCH_REQUIRE_JUDGE_SERVER=1 requires it")
        pytest.skip(missing)
    from crsbench_plugins.judges.smollm2 import smollm2_path

    directory, name = smollm2_path()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(directory / name),
               "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
               "--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "2", "--verbose", "False"]
    env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = LlamaServer(f"http://127.0.0.1:{port}/v1", process, log_path)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(server.base_url + "/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready after {SERVER_START_TIMEOUT}s:\n{server.log_tail()}")
            time.sleep(0.5)
        _warm_up(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(autouse=True)
def _no_http_proxy(monkeypatch):
    for var in PROXY_ENV:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def samples():
    from crsbench_plugins.judges import sanity

    rows = sanity.load_samples(N_PAIRS)
    return [JudgeInput(list(s["context"]), s["response"], list(s["context_roles"])) for s in rows]


def server_judge(base_url: str, **options) -> OpenAIJudge:
    judge = OpenAIJudge(**{"model": "smollm2", "base_url": base_url, "api_key_env": "", "method": "digit-expectation",
                           "rubric": "ecr-subjective-v1",  # the judges plugin registers several rubrics
                           "timeout": 60, "max_retries": 2, "concurrency": 1, **options})
    judge.delays = []
    judge._sleep = judge.delays.append  # no real backoff waits in tests
    return judge


@pytest.fixture(scope="module")
def remote(llama_server, samples):
    """The digit judge's results on all samples straight from the server, its stats, seconds."""
    judge = server_judge(llama_server.base_url)
    start = time.perf_counter()
    results = judge.score(samples)
    return results, judge.stats(), time.perf_counter() - start


@pytest.fixture(scope="module")
def direct_scores(remote):
    return [r.scores for r in remote[0]]


def _spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


# -- agreement with the in-process judge ------------------------------------------------------------
def test_digit_method_through_the_server_matches_the_in_process_judge(remote, samples):
    from crsbench_plugins.judges.smollm2 import SmolLM2Judge

    results, stats, remote_s = remote
    local = SmolLM2Judge(device="cpu", chat_template=False, threads=1, rubric="ecr-subjective-v1")
    start = time.perf_counter()
    here = local.score(samples)
    local_s = time.perf_counter() - start
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert all(r.ok for r in here)
    assert stats["requests"] == 5 * len(samples) and "errors" not in stats and "parse_failures" not in stats
    metrics = local.metrics
    a = [r.scores[m] for r in results for m in metrics]
    b = [r.scores[m] for r in here for m in metrics]
    diffs = [abs(x - y) for x, y in zip(a, b)]
    rho = _spearman(a, b)
    print(f"server vs in-process, {len(samples)} pairs x 5: max |diff| {max(diffs):.4f}, mean "
          f"{statistics.fmean(diffs):.4f}, Spearman {rho:.3f}, score std {statistics.pstdev(b):.3f}; digit mass "
          f"server {stats['mean_digit_mass']:.3f} local {local.stats()['mean_digit_mass']:.3f}; "
          f"server {remote_s:.1f}s, in-process {local_s:.1f}s (with loading)")
    assert statistics.pstdev(b) > 0.1  # the scores vary, so the correlation means something
    assert max(diffs) <= TOLERANCE_MAX and statistics.fmean(diffs) <= TOLERANCE_MEAN
    assert rho >= MIN_SPEARMAN


def test_the_server_adds_no_bos_token_and_tokenizes_almost_like_transformers(llama_server, samples):
    """SmolLM2's GGUF says add_bos_token=false and transformers adds none either. llama.cpp's
    tokenizer differs from transformers' in one place of the prompt: the blank line before the
    rubric's numbered list ("are:\n\n1.") is one token ("\n\n") for llama.cpp, two for
    transformers."""
    import difflib

    from crsbench_plugins.judges.smollm2 import SmolLM2Judge

    prompt = server_judge(llama_server.base_url).digit_prompts(samples[0])[0]
    root = llama_server.base_url.rsplit("/v1", 1)[0]
    request = urllib.request.Request(root + "/extras/tokenize", data=json.dumps({"input": prompt}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        server_tokens = json.loads(response.read())["tokens"]
    _, tokenizer = SmolLM2Judge(device="cpu", chat_template=False, rubric="ecr-subjective-v1").load()
    here = tokenizer.encode(prompt, add_special_tokens=True)
    assert server_tokens[0] == here[0] != tokenizer.bos_token_id
    changes = [(tokenizer.convert_ids_to_tokens(server_tokens[i1:i2]), tokenizer.convert_ids_to_tokens(here[j1:j2]))
               for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=server_tokens, b=here, autojunk=False).get_opcodes()
               if op != "equal"]
    newline = tokenizer.convert_ids_to_tokens(tokenizer.encode("\n"))[0]
    assert changes == [([newline * 2], [newline, newline])], changes
    assert tokenizer.decode(server_tokens) == tokenizer.decode(here) == prompt


# -- the default JSON method -------------------------------------------------------------------------
def test_json_method_through_the_server_scores_or_counts_parse_failures(llama_server, samples):
    judge = server_judge(llama_server.base_url, method="json-all-metrics", max_tokens=60)
    results = judge.score(samples[:3])
    stats = judge.stats()
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    print(f"json method: {len(ok)} scored, {len(failed)} failed; {stats}; e.g. {results[0].error or results[0].scores}")
    assert stats["requests"] == 3 and "errors" not in stats and "retries" not in stats
    assert stats.get("parse_failures", 0) == len(failed)
    assert all(r.scores is None and r.error.startswith("parse failure") for r in failed)
    assert all(set(r.scores) == set(judge.metrics) and all(0 <= v <= 9 for v in r.scores.values()) for r in ok)


# -- a fault-injecting proxy in front of the server --------------------------------------------------
class FaultProxy:
    """Forwards POSTs to ``upstream``; scripted actions are consumed one per request, then
    every request is forwarded: ``("status", code)``, ``("hang", seconds)`` (answer nothing
    for that long, then close), ``("raw", bytes)`` (a 200 with that body),
    ``("no_digit",)`` (a 200 completion whose top logprobs hold no digit), ``("forward",)``."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.script: list[tuple] = []
        self.seen: list[str] = []  # the action taken for each request
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, code: int, body: bytes):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up

            def do_POST(self):
                data = self.rfile.read(int(self.headers["Content-Length"]))
                with proxy.lock:
                    action = proxy.script.pop(0) if proxy.script else ("forward",)
                    proxy.seen.append(action[0])
                if action[0] == "status":
                    self.reply(action[1], b'{"error": {"message": "injected failure"}}')
                elif action[0] == "hang":
                    time.sleep(action[1])
                    self.close_connection = True
                elif action[0] == "raw":
                    self.reply(200, action[1])
                elif action[0] == "no_digit":
                    body = {"id": "x", "object": "text_completion", "choices": [
                        {"index": 0, "text": " The", "finish_reason": "length",
                         "logprobs": {"tokens": [" The"], "token_logprobs": [-0.1], "text_offset": [0],
                                      "top_logprobs": [{" The": -0.1, " A": -2.5, "\n": -3.0}]}}]}
                    self.reply(200, json.dumps(body).encode())
                else:
                    request = urllib.request.Request(proxy.upstream + self.path.removeprefix("/v1"), data=data,
                                                     headers={"Content-Type": "application/json"}, method="POST")
                    try:
                        with urllib.request.urlopen(request, timeout=120) as response:
                            self.reply(response.status, response.read())
                    except urllib.error.HTTPError as exc:
                        self.reply(exc.code, exc.read())

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(llama_server):
    p = FaultProxy(llama_server.base_url)
    yield p
    p.close()


def assert_same_scores(got: dict, want: dict):
    assert got.keys() == want.keys()
    for metric in want:  # llama.cpp is deterministic for a given prompt; allow float noise only
        assert got[metric] == pytest.approx(want[metric], abs=1e-4), metric


def test_transient_faults_are_retried_counted_and_do_not_change_scores(proxy, samples, direct_scores):
    # timeout 15 s: a real request on a busy 2-core machine took over 4 s; the hang outlasts it
    proxy.script = [("status", 500), ("status", 503), ("hang", 17.0), ("raw", b'{"choices": [{"text": "7", "log'),
                    ("raw", b'{"id": "x", "object": "text_completion", "model": "smollm2"}')]
    judge = server_judge(proxy.base_url, timeout=15, max_retries=5, retry_bad_body=True)
    results = judge.score(samples[:1])
    assert proxy.seen[:6] == ["status", "status", "hang", "raw", "raw", "forward"]
    assert all(r.ok for r in results), [r.error for r in results]
    for result, want in zip(results, direct_scores):
        assert_same_scores(result.scores, want)
    stats = judge.stats()
    assert stats["retries"] == 5 and stats["timeouts"] == 1 and stats["bad_bodies"] == 2
    assert stats["requests"] == 5 + 5 and "errors" not in stats and "parse_failures" not in stats
    assert judge.delays == [1.0, 2.0, 4.0, 8.0, 16.0]  # backoff 1 s, doubled


def test_a_pair_whose_attempts_all_fail_gets_no_score(proxy, samples, direct_scores):
    proxy.script = [("status", 500), ("status", 502), ("status", 503)]  # pair 0, metric 0: every attempt
    judge = server_judge(proxy.base_url, max_retries=2)
    results = judge.score(samples[:2])
    assert results[0] == JudgeScore(None, results[0].error) and results[0].scores is None
    assert "gave up after 3 attempts" in results[0].error and "HTTP 503" in results[0].error
    assert results[1].ok
    assert_same_scores(results[1].scores, direct_scores[1])
    stats = judge.stats()
    assert stats["errors"] == 1 and stats["retries"] == 2 and stats["requests"] == 3 + 5  # pair 0 stops at once


def test_malformed_bodies_and_answers_without_a_digit_fail_the_pair(proxy, samples, direct_scores):
    # default retry_bad_body=false: a malformed body fails the pair at once, as a parse failure
    proxy.script = [("raw", b"<html>502 Bad Gateway</html>"), ("forward",), ("forward",), ("no_digit",)]
    judge = server_judge(proxy.base_url)
    results = judge.score(samples[:3])
    assert results[0].scores is None and "not a completion" in results[0].error
    # pair 1: metrics 0 and 1 are forwarded, metric 2 gets an answer without a digit: no partial scores
    assert results[1].scores is None and "no digit among the top 3 tokens" in results[1].error
    assert results[2].ok
    assert_same_scores(results[2].scores, direct_scores[2])
    stats = judge.stats()
    assert stats["parse_failures"] == 2 and "retries" not in stats and "errors" not in stats
    assert stats["requests"] == 1 + 3 + 5
