"""A judge behind an OpenAI-compatible ``/v1/chat/completions`` endpoint (OpenAI, vLLM,
llama.cpp server, Ollama, ...). Standard library only: urllib for HTTP, a thread pool for
bounded concurrency.

One request per pair asks for all five scores as a JSON object (the prompt of
``Rubric.build_prompt(context, response)`` of the judge's rubric); :func:`parse_scores` reads the JSON
object, or ``metric: N`` lines when the model wrote prose. Transient failures (timeouts,
connection errors, HTTP 5xx and 429) are retried with exponential backoff; other 4xx errors
are not. A pair that still fails, or whose answer cannot be parsed, gets
``JudgeScore(None, error)`` and is counted in ``stats()``.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from typing import Sequence
from concurrent.futures import ThreadPoolExecutor

from crsbench.errors import UserError
from crsbench.judge import Judge, JudgeInput, JudgeScore, check_score

OPTIONS = {"base_url", "model", "model_id", "api_key_env", "timeout", "max_retries", "backoff", "max_backoff",
           "concurrency", "temperature", "max_tokens", "json_mode", "max_context_turns", "max_turn_chars"}
DEFAULTS = {"base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY", "timeout": 60.0,
            "max_retries": 4, "backoff": 1.0, "max_backoff": 30.0, "concurrency": 4, "temperature": 0.0,
            "max_tokens": 200, "json_mode": False}
ERROR_BODY_CHARS = 300


class _Retryable(Exception):
    """A transient failure: worth another try."""


class _Fatal(Exception):
    """A failure another try will not fix (4xx other than 429)."""


class _BadBody(Exception):
    """The server answered 200 with something that is not a chat completion."""


# -- parsing ----------------------------------------------------------------------------------
_KEY_RE = re.compile(r"[^a-z]+")
_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)


def _norm_key(key: str) -> str:
    return _KEY_RE.sub("_", str(key).lower()).strip("_")


def _from_mapping(obj: dict, metrics: Sequence[str]) -> dict[str, float]:
    found = {}
    for key, value in obj.items():
        metric = _norm_key(key)
        if metric not in metrics:
            continue
        if isinstance(value, dict):  # {"informativeness": {"score": 7, "reason": ...}}
            value = next((value[k] for k in ("score", "value", "rating") if k in value), None)
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*9)?\s*", value)
            value = match.group(1) if match else value
        found[metric] = check_score(value)
    return found


def _json_candidates(text: str):
    yield text
    for block in _FENCE_RE.findall(text):
        yield block
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        yield text[start:end + 1]


def _line_pattern(metric: str) -> re.Pattern:
    return re.compile(r"[\"']?" + metric.replace("_", r"[\s_-]*") + r"[\"']?\s*(?:\*\*)?\s*[:=\-]\s*(?:\*\*)?\s*"
                      r"(\d+(?:\.\d+)?)(?!\d)", re.I)


def parse_scores(text: str, metrics: Sequence[str]) -> dict[str, float]:
    """The scores of ``metrics`` in a judge's answer: a JSON object (possibly inside a code fence or
    surrounded by prose), or ``metric: N`` lines. Raises ``ValueError`` naming what is
    missing or out of range."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty answer")
    problems = []
    for candidate in _json_candidates(text.strip()):
        try:
            obj = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(obj, dict):
            if isinstance(obj.get("scores"), dict):
                obj = obj["scores"]
            try:
                found = _from_mapping(obj, metrics)
            except (TypeError, ValueError) as exc:
                problems.append(str(exc))
                continue
            if set(found) == set(metrics):
                return found
    found = {}
    for metric in metrics:
        match = _line_pattern(metric).search(text)
        if match:
            found[metric] = check_score(match.group(1))
    if set(found) == set(metrics):
        return found
    missing = [m for m in metrics if m not in found]
    detail = f"; {problems[0]}" if problems else ""
    raise ValueError(f"no score for {', '.join(missing)}{detail}")


# -- the judge --------------------------------------------------------------------------------
class OpenAIJudge(Judge):
    """An OpenAI-compatible chat endpoint as judge (all five scores per request, as JSON).

    Options: ``model`` (required), ``base_url`` (default ``https://api.openai.com/v1``; the
    request goes to ``<base_url>/chat/completions``), ``api_key_env`` (the *name* of the
    environment variable holding the key, default ``OPENAI_API_KEY``; unset = no
    Authorization header, for local servers), ``timeout`` (seconds per request, 60),
    ``max_retries`` (4), ``backoff`` (first delay in seconds, doubled each retry, 1.0),
    ``max_backoff`` (30), ``concurrency`` (requests in flight, 4), ``temperature`` (0),
    ``max_tokens`` (200), ``json_mode`` (send ``response_format: json_object``, false),
    ``max_context_turns`` (6), ``max_turn_chars`` (600), ``model_id`` (recorded id;
    default: ``model``)."""

    name = "openai"
    description = "An OpenAI-compatible /v1/chat/completions endpoint (options base_url, model, api_key_env)."

    def __init__(self, **options):
        super().__init__(**options)
        self.check_options(OPTIONS)
        cfg = {**DEFAULTS, **options}
        if not cfg.get("model"):
            raise UserError(f"judge {self.name!r}: option model (the endpoint's model name) is required")
        self.model = str(cfg["model"])
        base = str(cfg["base_url"]).rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.api_key_env = cfg["api_key_env"]
        try:
            self.timeout = float(cfg["timeout"])
            self.max_retries = int(cfg["max_retries"])
            self.backoff = float(cfg["backoff"])
            self.max_backoff = float(cfg["max_backoff"])
            self.concurrency = int(cfg["concurrency"])
            self.temperature = float(cfg["temperature"])
            self.max_tokens = int(cfg["max_tokens"])
        except (TypeError, ValueError) as exc:
            raise UserError(f"judge {self.name!r}: bad option value: {exc}") from exc
        if self.timeout <= 0 or self.max_retries < 0 or self.backoff < 0 or self.concurrency < 1:
            raise UserError(f"judge {self.name!r}: need timeout > 0, max_retries >= 0, backoff >= 0, concurrency >= 1")
        self.json_mode = bool(cfg["json_mode"])
        self._sleep = time.sleep  # tests may replace it

    @property
    def model_id(self) -> str:
        return str(self.options.get("model_id") or self.model)

    def settings(self) -> dict:
        return {"method": "json-all-metrics", "temperature": self.temperature,
                "max_context_turns": self.max_turns, "max_turn_chars": self.max_turn_chars}

    # -- one request -----------------------------------------------------------------------
    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def request_body(self, item: JudgeInput) -> dict:
        prompt = self.rubric.build_prompt(item.context, item.response, None, roles=item.roles,
                                          max_turns=self.max_turns, max_turn_chars=self.max_turn_chars)
        body = {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "messages": [{"role": "system", "content": self.rubric.system_prompt},
                             {"role": "user", "content": prompt}]}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def _post_once(self, data: bytes) -> str:
        """The assistant message of one attempt, or _Retryable / _Fatal / _BadBody."""
        request = urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST")
        self.count("requests")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            try:
                detail = exc.read().decode("utf-8", "replace")[:ERROR_BODY_CHARS]
            except Exception:  # the error body itself may time out
                detail = ""
            message = f"HTTP {exc.code} {exc.reason}: {detail}".strip().rstrip(":")
            if exc.code == 429 or 500 <= exc.code < 600:
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                error = _Retryable(message)
                error.retry_after = retry_after  # type: ignore[attr-defined]
                raise error from None
            raise _Fatal(message) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                self.count("timeouts")
                raise _Retryable(f"timed out after {self.timeout:g}s") from None
            raise _Retryable(f"connection failed: {reason}") from None
        except (TimeoutError, socket.timeout):
            self.count("timeouts")
            raise _Retryable(f"timed out after {self.timeout:g}s") from None
        except (http.client.HTTPException, ConnectionError, OSError) as exc:
            raise _Retryable(f"connection failed: {type(exc).__name__}: {exc}") from None
        try:
            payload = json.loads(raw.decode("utf-8"))
            content = payload["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise _BadBody(f"not a chat completion ({type(exc).__name__}): {raw[:ERROR_BODY_CHARS]!r}") from None
        if not isinstance(content, str):
            raise _BadBody(f"message content is {type(content).__name__}, not text")
        return content

    def _delay(self, attempt: int, error: Exception) -> float:
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            try:
                delay = max(delay, min(self.max_backoff, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: keep the exponential delay
        return delay

    def score_one(self, item: JudgeInput) -> JudgeScore:
        data = json.dumps(self.request_body(item)).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            try:
                content = self._post_once(data)
            except _Retryable as exc:
                if attempt == self.max_retries:
                    self.count("errors")
                    return JudgeScore(None, f"gave up after {attempt + 1} attempts: {exc}")
                self.count("retries")
                self._sleep(self._delay(attempt, exc))
                continue
            except _Fatal as exc:
                self.count("errors")
                return JudgeScore(None, str(exc))
            except _BadBody as exc:
                self.count("parse_failures")
                return JudgeScore(None, f"parse failure: {exc}")
            try:
                return JudgeScore(parse_scores(content, self.metrics))
            except ValueError as exc:
                self.count("parse_failures")
                return JudgeScore(None, f"parse failure: {exc}; answer: {content[:ERROR_BODY_CHARS]!r}")
        raise AssertionError("unreachable")

    def score(self, items: list[JudgeInput]) -> list[JudgeScore]:
        items = list(items)
        if len(items) <= 1 or self.concurrency == 1:
            return [self.score_one(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)),
                                thread_name_prefix="crsbench-judge") as pool:
            return list(pool.map(self.score_one, items))


class HTTPJudge(OpenAIJudge):
    name = "http"
    description = "Alias of the 'openai' judge (any OpenAI-compatible chat completions endpoint)."
