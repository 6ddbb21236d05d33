"""Reading an OpenAI-compatible judge's answers (``http.py``): the five scores from a chat
answer (:func:`parse_scores`: a JSON object, or ``metric: N`` lines), and the expected digit
from one completion's top log-probabilities (:func:`expected_digit`, :func:`top_logprobs`).
Standard library only.
"""
from __future__ import annotations

import json
import math
import re
from typing import Sequence

from crsbench.judge import check_score

ERROR_BODY_CHARS = 300  # how much of an unexpected answer an error message quotes


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


# -- digit expectation from top log-probabilities -------------------------------------------
def expected_digit(top: dict[str, float], digits: Sequence[str]) -> tuple[float, float]:
    """``(expected digit, digit mass)`` from one position's top log-probabilities
    (token -> logprob): the digits among them renormalised over the digits, as the local
    judge does over all ten. Raises ``ValueError`` when no digit is among them."""
    found = {}
    for token, logprob in top.items():
        if token in digits:
            value = float(logprob)
            if math.isnan(value):
                raise ValueError(f"logprob of {token!r} is NaN")
            found[digits.index(token)] = value
    if not found:
        shown = sorted(top.items(), key=lambda kv: -float(kv[1]))[:5]
        raise ValueError(f"no digit among the top {len(top)} tokens (best: {shown})")
    peak = max(found.values())
    weights = {d: math.exp(lp - peak) for d, lp in found.items()}
    total = sum(weights.values())
    return sum(d * w for d, w in weights.items()) / total, total * math.exp(peak)


def top_logprobs(choice: dict) -> dict[str, float]:
    """The first generated token's top log-probabilities from a completion choice: the legacy
    completions format (``logprobs.top_logprobs[0]`` is ``{token: logprob}``, llama.cpp and
    vLLM), or the chat format (``logprobs.content[0].top_logprobs`` is a list of
    ``{"token", "logprob"}``)."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        raise ValueError("the completion has no logprobs (does the endpoint return logprobs on /completions?)")
    if isinstance(logprobs.get("top_logprobs"), list) and logprobs["top_logprobs"]:
        first = logprobs["top_logprobs"][0]
        if isinstance(first, dict) and first:
            return {str(k): float(v) for k, v in first.items() if isinstance(v, (int, float))}
    content = logprobs.get("content")
    if isinstance(content, list) and content and isinstance(content[0], dict):
        entries = content[0].get("top_logprobs") or []
        return {str(e["token"]): float(e["logprob"]) for e in entries
                if isinstance(e, dict) and "token" in e and isinstance(e.get("logprob"), (int, float))}
    raise ValueError(f"no top logprobs in the completion: {json.dumps(logprobs)[:ERROR_BODY_CHARS]}")
