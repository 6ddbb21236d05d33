"""A judge behind an OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, Ollama,
...). Standard library only: urllib for HTTP, a thread pool for bounded concurrency.

Two methods. ``json-all-metrics`` (default): one ``/chat/completions`` request per pair
asks for all five scores as a JSON object (the prompt of
``Rubric.build_prompt(context, response)``); :func:`parse_scores` reads the JSON object, or
``metric: N`` lines when the model wrote prose. ``digit-expectation``: one ``/completions``
request per metric with the local judge's plain-text prompt, one token, top
log-probabilities; the score is the expected digit (:func:`expected_digit`), as the local
judge computes it. Transient failures (timeouts, connection errors, HTTP 5xx and 429; with
``retry_bad_body`` also a 200 that is not a completion) are retried with exponential
backoff; other 4xx errors are not. A pair that still fails, or whose answer cannot be
parsed, gets ``JudgeScore(None, error)`` and is counted in ``stats()``.

The answers are read in ``http_answers.py``, one attempt is bounded in ``http_transport.py``.
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from crsbench.errors import UserError
from crsbench.judge import Judge, JudgeInput, JudgeScore
# parse_scores and expected_digit stay importable from here: docs/judges.md names them so
from crsbench_plugins.judges.http_answers import ERROR_BODY_CHARS, expected_digit, parse_scores, top_logprobs
from crsbench_plugins.judges.http_transport import BadBody, Fatal, Retryable, TooLarge, Watchdog, read_capped, watched_opener
from crsbench_plugins.judges.prompts import answer_text, plain_prompt_parts

OPTIONS = {"base_url", "model", "model_id", "api_key_env", "timeout", "max_retries", "backoff", "max_backoff",
           "concurrency", "temperature", "max_tokens", "json_mode", "max_context_turns", "max_turn_chars",
           "method", "top_logprobs", "digit_tokens", "retry_bad_body", "deadline", "max_response_bytes"}
DEFAULTS = {"base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY", "timeout": 60.0,
            "max_retries": 4, "backoff": 1.0, "max_backoff": 30.0, "concurrency": 4, "temperature": 0.0,
            "max_tokens": 200, "json_mode": False, "method": "json-all-metrics", "top_logprobs": 20,
            "digit_tokens": "plain", "retry_bad_body": False, "deadline": None, "max_response_bytes": 8 << 20}
METHODS = ("json-all-metrics", "digit-expectation")
DIGIT_TOKENS = ("plain", "spaced")


class _Failed(Exception):
    """A pair that cannot be scored; the message is its error. Counted where raised."""


class OpenAIJudge(Judge):
    """An OpenAI-compatible endpoint as judge.

    ``method`` ``json-all-metrics`` (default): one chat request per pair asks for all five
    scores as JSON. ``digit-expectation``: one ``/completions`` request per metric with the
    plain-text prompt of the local judge (no chat template), ``max_tokens`` 1 and
    ``top_logprobs`` log-probabilities; the score is the expected digit over the digits among
    them, renormalised, as the local judge computes it over all ten. ``digit_tokens``
    ``plain`` (default: the prompt ends with ``Score (0-9): `` and the digits are read as
    ``0``..``9``, for tokenizers that split digits from spaces: SmolLM2, Llama 3, Qwen) or
    ``spaced`` (the prompt ends with ``Score (0-9):``, digits ``" 0"``..``" 9"``, GPT-2 style).

    Options: ``model`` (required), ``base_url`` (default ``https://api.openai.com/v1``; the
    request goes to ``<base_url>/chat/completions``, or ``<base_url>/completions`` for the
    digit method), ``api_key_env`` (the *name* of the environment variable holding the key,
    default ``OPENAI_API_KEY``; unset = no Authorization header, for local servers),
    ``timeout`` (seconds any one socket read may wait, 60), ``deadline`` (seconds one attempt
    may take in all, however the server drips its answer; default twice ``timeout``),
    ``max_response_bytes`` (a larger answer fails the pair without retry, 8 MiB), ``max_retries`` (4), ``backoff`` (first delay in
    seconds, doubled each retry, 1.0), ``max_backoff`` (30), ``retry_bad_body`` (also retry a
    200 whose body is not JSON or has no choices; false), ``concurrency`` (pairs in flight,
    4), ``temperature`` (0), ``max_tokens`` (200, json method), ``json_mode`` (send
    ``response_format: json_object``, false), ``top_logprobs`` (20, digit method),
    ``max_context_turns`` (6), ``max_turn_chars`` (600), ``model_id`` (recorded id; default:
    ``model``)."""

    name = "openai"
    description = "An OpenAI-compatible endpoint (options base_url, model, api_key_env, method)."

    def __init__(self, **options):
        super().__init__(**options)
        self.check_options(OPTIONS)
        cfg = {**DEFAULTS, **options}
        if not cfg.get("model"):
            raise UserError(f"judge {self.name!r}: option model (the endpoint's model name) is required")
        self.model = str(cfg["model"])
        self.method = str(cfg["method"])
        if self.method not in METHODS:
            raise UserError(f"judge {self.name!r}: method must be one of {', '.join(METHODS)}")
        self.digit_tokens = str(cfg["digit_tokens"])
        if self.digit_tokens not in DIGIT_TOKENS:
            raise UserError(f"judge {self.name!r}: digit_tokens must be one of {', '.join(DIGIT_TOKENS)}")
        endpoint = "/completions" if self.method == "digit-expectation" else "/chat/completions"
        base = str(cfg["base_url"]).rstrip("/")
        self.url = base if base.endswith(endpoint) else base + endpoint
        self.api_key_env = cfg["api_key_env"]
        try:
            self.timeout = float(cfg["timeout"])
            self.max_retries = int(cfg["max_retries"])
            self.backoff = float(cfg["backoff"])
            self.max_backoff = float(cfg["max_backoff"])
            self.concurrency = int(cfg["concurrency"])
            self.temperature = float(cfg["temperature"])
            self.max_tokens = int(cfg["max_tokens"])
            self.top_logprobs = int(cfg["top_logprobs"])
            self.deadline = 2 * self.timeout if cfg["deadline"] is None else float(cfg["deadline"])
            self.max_response_bytes = int(cfg["max_response_bytes"])
        except (TypeError, ValueError) as exc:
            raise UserError(f"judge {self.name!r}: bad option value: {exc}") from exc
        if self.timeout <= 0 or self.max_retries < 0 or self.backoff < 0 or self.concurrency < 1:
            raise UserError(f"judge {self.name!r}: need timeout > 0, max_retries >= 0, backoff >= 0, concurrency >= 1")
        if not self.deadline > 0 or self.max_response_bytes < 1:
            raise UserError(f"judge {self.name!r}: need deadline > 0 and max_response_bytes >= 1")
        if self.top_logprobs < 1:
            raise UserError(f"judge {self.name!r}: top_logprobs must be >= 1")
        self.json_mode = bool(cfg["json_mode"])
        self.retry_bad_body = bool(cfg["retry_bad_body"])
        self._sleep = time.sleep  # tests may replace it

    @property
    def model_id(self) -> str:
        return str(self.options.get("model_id") or self.model)

    def settings(self) -> dict:
        common = {"method": self.method, "temperature": self.temperature,
                  "max_context_turns": self.max_turns, "max_turn_chars": self.max_turn_chars}
        if self.method == "digit-expectation":
            return {**common, "chat_template": False, "digit_tokens": self.digit_tokens,
                    "top_logprobs": self.top_logprobs}
        return {**common, "max_tokens": self.max_tokens, "json_mode": self.json_mode}

    # -- requests --------------------------------------------------------------------------
    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    @property
    def digits(self) -> tuple[str, ...]:
        return tuple((" " if self.digit_tokens == "spaced" else "") + str(d) for d in range(10))

    def digit_prompts(self, item: JudgeInput) -> list[str]:
        """The plain-text prompt of each metric, as the local judge builds it without a chat template."""
        answer = answer_text(self.rubric, self.digit_tokens == "spaced")
        shared, suffixes = plain_prompt_parts(self.rubric, item, self.metrics, answer,
                                              max_turns=self.max_turns, max_turn_chars=self.max_turn_chars)
        return [shared + suffix for suffix in suffixes]

    def request_body(self, item: JudgeInput) -> dict:
        """The chat request of the json method."""
        prompt = self.rubric.build_prompt(item.context, item.response, None, roles=item.roles,
                                          max_turns=self.max_turns, max_turn_chars=self.max_turn_chars)
        body = {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "messages": [{"role": "system", "content": self.rubric.system_prompt},
                             {"role": "user", "content": prompt}]}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def completion_body(self, prompt: str) -> dict:
        """The completions request of the digit method: one token, with top log-probabilities."""
        return {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": self.temperature,
                "logprobs": self.top_logprobs, "echo": False}

    def _post_once(self, data: bytes) -> dict:
        """The first choice of one attempt's completion, or Retryable / Fatal / BadBody. The
        attempt, error body included, ends by ``deadline`` (see ``http_transport.Watchdog``)."""
        request = urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST")
        self.count("requests")
        watchdog = Watchdog(self.deadline)
        try:
            with watched_opener(watchdog).open(request, timeout=self.timeout) as response:
                raw = read_capped(response, self.max_response_bytes)
        except TooLarge as exc:
            raise Fatal(str(exc)) from None
        except urllib.error.HTTPError as exc:
            try:
                detail = exc.read(ERROR_BODY_CHARS * 4).decode("utf-8", "replace")[:ERROR_BODY_CHARS]
            except Exception:  # the error body itself may time out
                detail = ""
            message = f"HTTP {exc.code} {exc.reason}: {detail}".strip().rstrip(":")
            if exc.code == 429 or 500 <= exc.code < 600:
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                error = Retryable(message)
                error.retry_after = retry_after  # type: ignore[attr-defined]
                raise error from None
            raise Fatal(message) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            if watchdog.fired:
                self.count("timeouts")
                raise Retryable(f"no complete answer within the {self.deadline:g}s deadline") from None
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, (TimeoutError, socket.timeout)):
                self.count("timeouts")
                raise Retryable(f"timed out after {self.timeout:g}s") from None
            if isinstance(exc, urllib.error.URLError):
                raise Retryable(f"connection failed: {reason}") from None
            raise Retryable(f"connection failed: {type(exc).__name__}: {exc}") from None
        finally:
            watchdog.cancel()
        if watchdog.fired:  # the shutdown may end a read as a short, apparently complete body
            self.count("timeouts")
            raise Retryable(f"no complete answer within the {self.deadline:g}s deadline")
        return self._choice(raw)

    def _choice(self, raw: bytes) -> dict:
        kind = "completion" if self.method == "digit-expectation" else "chat completion"
        try:
            payload = json.loads(raw.decode("utf-8"))
            choice = payload["choices"][0]
            if not isinstance(choice, dict):
                raise TypeError("choice is not an object")
            if self.method != "digit-expectation":
                content = choice["message"]["content"]
                if not isinstance(content, str):
                    raise BadBody(f"message content is {type(content).__name__}, not text")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BadBody(f"not a {kind} ({type(exc).__name__}): {raw[:ERROR_BODY_CHARS]!r}") from None
        return choice

    def _delay(self, attempt: int, error: Exception) -> float:
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            try:
                delay = max(delay, min(self.max_backoff, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: keep the exponential delay
        return delay

    def _request(self, body: dict) -> dict:
        """The first choice of a completion, with retries; raises _Failed (already counted)."""
        data = json.dumps(body).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            try:
                return self._post_once(data)
            except BadBody as exc:
                if not self.retry_bad_body:
                    self.count("parse_failures")
                    raise _Failed(f"parse failure: {exc}") from None
                self.count("bad_bodies")
                error: Exception = exc
            except Retryable as exc:
                error = exc
            except Fatal as exc:
                self.count("errors")
                raise _Failed(str(exc)) from None
            if attempt == self.max_retries:
                self.count("errors")
                raise _Failed(f"gave up after {attempt + 1} attempts: {error}")
            self.count("retries")
            self._sleep(self._delay(attempt, error))
        raise AssertionError("unreachable")

    def _score_json(self, item: JudgeInput) -> JudgeScore:
        content = self._request(self.request_body(item))["message"]["content"]
        try:
            return JudgeScore(parse_scores(content, self.metrics))
        except ValueError as exc:
            self.count("parse_failures")
            return JudgeScore(None, f"parse failure: {exc}; answer: {content[:ERROR_BODY_CHARS]!r}")

    def _score_digits(self, item: JudgeInput) -> JudgeScore:
        scores, masses = {}, []
        for metric, prompt in zip(self.metrics, self.digit_prompts(item)):
            choice = self._request(self.completion_body(prompt))
            try:
                scores[metric], mass = expected_digit(top_logprobs(choice), self.digits)
            except (ValueError, TypeError, KeyError) as exc:
                self.count("parse_failures")
                return JudgeScore(None, f"parse failure ({metric}): {exc}")  # no partial scores
            masses.append(mass)
        self.count("digit_mass_sum", sum(masses))
        self.count("digit_mass_n", len(masses))
        return JudgeScore(scores)

    def score_one(self, item: JudgeInput) -> JudgeScore:
        try:
            if self.method == "digit-expectation":
                return self._score_digits(item)
            return self._score_json(item)
        except _Failed as exc:
            return JudgeScore(None, str(exc))

    def score(self, items: list[JudgeInput]) -> list[JudgeScore]:
        items = list(items)
        if len(items) <= 1 or self.concurrency == 1:
            return [self.score_one(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)),
                                thread_name_prefix="crsbench-judge") as pool:
            return list(pool.map(self.score_one, items))

    def stats(self) -> dict[str, float]:
        out = super().stats()
        n = out.pop("digit_mass_n", 0)
        total = out.pop("digit_mass_sum", 0.0)
        if n:
            out["mean_digit_mass"] = total / n  # of the digits among the top logprobs
        return out


class HTTPJudge(OpenAIJudge):
    name = "http"
    description = "Alias of the 'openai' judge (any OpenAI-compatible chat completions endpoint)."
