"""A judge that runs a causal language model locally with transformers.

Scoring is the *probability-weighted digit*: the prompt (rubric, conversation, reply, one
metric's question) ends with the answer prefix ``Score (0-9):``; the next-token
probabilities of the ten digit tokens are renormalised over the digits and the judge's
score is their expectation, ``sum_d d * p(d) / sum_d p(d)``. No sampling, so scores are
deterministic, and they are continuous (7.3, not just 7).

Efficiency: every prompt is ``common + pair part + question``: the chat header and rubric
(the same for every pair), the conversation and reply (the same for the five metrics of a
pair), and one metric's question with the answer prefix. With ``share_prefix`` (the
default) a batch runs the common part once, the pair parts on its KV cache (repeated per
pair, left-padded), and the five questions on that cache (repeated per metric,
left-padded); padding is masked and position ids continue from each row's real length, so
the scores equal the full computation (``share_prefix=False``, which runs every (pair,
metric) prompt in full; tests/test_judges.py checks they agree within 1e-4).

Loading lives in ``local_model.py``, the forward passes in ``local_forward.py``; the
``smollm2`` judge (this judge on a fixed GGUF file) in ``smollm2.py``.

torch and transformers are imported when a judge first scores, never at registration.
"""
from __future__ import annotations

import inspect
from pathlib import Path

from crsbench.errors import UserError
from crsbench.judge import Judge, JudgeInput, JudgeScore
from crsbench_plugins.judges.local_forward import last_logprobs_full, last_logprobs_shared
from crsbench_plugins.judges.local_model import dir_fingerprint, load_model, resolve_device, torch_threads
from crsbench_plugins.judges.prompts import answer_text, metric_parts, plain_prompt_parts

DIGITS = tuple(str(d) for d in range(10))
OPTIONS = {"model", "model_id", "gguf_file", "device", "dtype", "batch_size", "max_context_turns",
           "max_turn_chars", "chat_template", "share_prefix", "max_length", "local_files_only",
           "trust_remote_code", "threads"}


class LocalJudge(Judge):
    """A transformers causal LM as judge (probability-weighted digit score).

    Options: ``model`` (hub id or local directory; required), ``gguf_file`` (a GGUF file in
    that directory), ``model_id`` (the id recorded with the scores; default: the hub id, or
    ``<dir name>@<fingerprint>`` for a directory), ``device`` (``auto``, ``cpu``, ``cuda``,
    ...; default ``auto``), ``dtype`` (``auto`` = float32 on CPU, bfloat16 on CUDA;
    ``float32``, ``bfloat16``, ``float16``), ``batch_size`` (pairs per forward pass, 8),
    ``max_context_turns`` (6), ``max_turn_chars`` (600), ``chat_template`` (``auto``: use the
    tokenizer's template if it has one; true/false), ``share_prefix`` (true),
    ``max_length`` (tokens per prompt; default: the model's limit), ``local_files_only``
    (false), ``trust_remote_code`` (false), ``threads`` (torch CPU threads while the judge
    loads and scores, restored afterwards so training elsewhere in the process keeps its
    threads; default: leave torch's setting)."""

    name = "local"
    description = "A local transformers causal LM; score = expected digit after 'Score (0-9):' (option model)."

    def __init__(self, **options):
        super().__init__(**options)
        self.check_options(OPTIONS)
        if not options.get("model"):
            raise UserError(f"judge {self.name!r}: option model (a hub id or a local directory) is required")
        self.model_name = str(options["model"])
        self.gguf_file = options.get("gguf_file")
        self.device_option = options.get("device", "auto")
        self.dtype_option = str(options.get("dtype", "auto"))
        self.batch_size = int(options.get("batch_size", 8))
        self.chat_template = options.get("chat_template", "auto")
        self.share_prefix = bool(options.get("share_prefix", True))
        self.max_length = options.get("max_length")
        if self.batch_size < 1:
            raise UserError(f"judge {self.name!r}: batch_size must be >= 1")
        if self.dtype_option not in ("auto", "float32", "bfloat16", "float16"):
            raise UserError(f"judge {self.name!r}: dtype must be auto, float32, bfloat16 or float16")
        if self.chat_template not in ("auto", True, False):
            raise UserError(f"judge {self.name!r}: chat_template must be auto, true or false")
        self._model = None
        self._tokenizer = None
        self._plan = None  # (answer text, digit token ids per digit)

    # -- identity --------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        if self.options.get("model_id"):
            return str(self.options["model_id"])
        path = Path(self.model_name).expanduser()
        if path.exists():
            target = path / self.gguf_file if self.gguf_file else path
            stem = Path(self.gguf_file).stem if self.gguf_file else path.resolve().name
            return f"{stem}@{dir_fingerprint(target)}"
        return self.model_name + (f"/{self.gguf_file}" if self.gguf_file else "")

    def settings(self) -> dict:
        return {"method": "digit-expectation", "max_context_turns": self.max_turns,
                "max_turn_chars": self.max_turn_chars, "chat_template": self.chat_template,
                "dtype": self.dtype_name}

    @property
    def dtype_name(self) -> str:
        """The dtype the weights compute in (``auto``: bfloat16 on CUDA, float32 elsewhere)."""
        if self.dtype_option != "auto":
            return self.dtype_option
        return "bfloat16" if resolve_device(self.device_option).startswith("cuda") else "float32"

    # -- loading ---------------------------------------------------------------------------
    def load(self):
        """Load (once per process and configuration) the model and tokenizer."""
        if self._model is not None:
            return self._model, self._tokenizer
        with self._threads():
            return self._load()

    def _threads(self):
        """Torch's CPU thread count set to the ``threads`` option for the duration, then restored."""
        return torch_threads(self.options.get("threads"))

    def _load(self):
        device = resolve_device(self.device_option)
        self._model, self._tokenizer = load_model(
            self.model_name, self.gguf_file, device, self.dtype_name,
            local_files_only=bool(self.options.get("local_files_only", False)),
            trust_remote_code=bool(self.options.get("trust_remote_code", False)), judge_name=self.name)
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._plan = self._digit_plan(self._tokenizer)
        self._cache_kw = "cache" if "cache" in inspect.signature(self._model.forward).parameters else "past_key_values"
        return self._model, self._tokenizer

    def _digit_plan(self, tokenizer) -> tuple[str, list[int]]:
        """How the answer continues: if " 7" is one token, the prompt ends with the answer
        prefix and the digits are " 0".." 9"; otherwise (digits split from spaces, as in
        SmolLM2) the prompt ends with the prefix and a space and the digits are "0".."9"."""
        def single(text):
            ids = tokenizer.encode(text, add_special_tokens=False)
            return ids[0] if len(ids) == 1 else None

        spaced = [single(" " + d) for d in DIGITS]
        if all(i is not None for i in spaced) and len(set(spaced)) == 10:
            return answer_text(self.rubric, True), spaced
        plain = [single(d) for d in DIGITS]
        if all(i is not None for i in plain) and len(set(plain)) == 10:
            return answer_text(self.rubric, False), plain
        raise UserError("judge: the tokenizer does not spell the digits 0-9 as single tokens")

    def _use_chat(self, tokenizer) -> bool:
        if self.chat_template == "auto":
            return bool(getattr(tokenizer, "chat_template", None))
        return bool(self.chat_template)

    # -- prompts ---------------------------------------------------------------------------
    def prompt_texts(self, item: JudgeInput) -> tuple[str, str, list[str]]:
        """``(common, item_part, suffixes)``, exactly as tokenized: the text every pair shares
        (chat header and rubric), the pair's conversation and reply, and one question +
        answer prefix per metric. A prompt is ``common + item_part + suffixes[k]``."""
        _, tokenizer = self.load()
        answer, _ = self._plan
        limits = {"max_turns": self.max_turns, "max_turn_chars": self.max_turn_chars}
        if not self._use_chat(tokenizer):
            prefix, suffixes = plain_prompt_parts(self.rubric, item, self.metrics, answer, **limits)
        else:
            shared, questions = metric_parts(self.rubric, item, self.metrics, **limits)
            prefix, suffixes = None, []
            for question in questions:
                messages = [{"role": "system", "content": self.rubric.system_prompt},
                            {"role": "user", "content": shared + question}]
                text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                cut = text.find(shared)
                if cut < 0:
                    raise UserError(f"judge {self.name!r}: the chat template changes the prompt text; "
                                    "set chat_template=false")
                cut += len(shared)
                if prefix is None:
                    prefix = text[:cut]
                elif text[:cut] != prefix:
                    raise UserError(f"judge {self.name!r}: the chat template does not keep a shared prefix")
                suffixes.append(text[cut:] + answer)
        common_end = prefix.find(self.rubric.text) + len(self.rubric.text)
        return prefix[:common_end], prefix[common_end:], suffixes

    def _encode(self, item: JudgeInput) -> tuple[list[int], list[int], list[list[int]]]:
        """Token ids of :meth:`prompt_texts`; the parts are tokenized separately (so the
        shared and the full computation see exactly the same ids)."""
        _, tokenizer = self.load()
        common, middle, suffixes = self.prompt_texts(item)
        special = not self._use_chat(tokenizer)  # a chat template writes its own special tokens
        return (tokenizer.encode(common, add_special_tokens=special),
                tokenizer.encode(middle, add_special_tokens=False),
                [tokenizer.encode(s, add_special_tokens=False) for s in suffixes])

    def _limit(self) -> int:
        if self.max_length:
            return int(self.max_length)
        config = self._model.config
        for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(config, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return 1 << 30

    # -- scoring ---------------------------------------------------------------------------
    def score(self, items: list[JudgeInput]) -> list[JudgeScore]:
        with self._threads():
            return self._score(items)

    def _score(self, items: list[JudgeInput]) -> list[JudgeScore]:
        import torch

        items = list(items)
        if not items:
            return []
        self.load()
        encoded = [self._encode(item) for item in items]
        limit = self._limit()
        results: list[JudgeScore | None] = [None] * len(items)
        ok = []
        for i, (common, middle, suffixes) in enumerate(encoded):
            longest = len(common) + len(middle) + max(len(s) for s in suffixes)
            if longest > limit:
                results[i] = JudgeScore(None, f"prompt too long: {longest} tokens > {limit}")
                self.count("errors")
            else:
                ok.append(i)
        ok.sort(key=lambda i: len(encoded[i][1]))  # similar lengths share a batch: less padding
        for start in range(0, len(ok), self.batch_size):
            batch = ok[start:start + self.batch_size]
            probs = self.digit_probabilities([encoded[i] for i in batch])  # (B, 5, 10)
            expected = (probs * torch.arange(10, dtype=probs.dtype)).sum(-1)
            for row, i in enumerate(batch):
                results[i] = JudgeScore({m: float(expected[row, k]) for k, m in enumerate(self.metrics)})
        self.count("scored", len(ok))
        return results  # type: ignore[return-value]

    def digit_probabilities(self, encoded: list[tuple[list[int], list[int], list[list[int]]]],
                            share_prefix: bool | None = None):
        """(pairs, metrics, 10) next-token probabilities of the digits, renormalised over the
        digits (float64, on CPU), for encoded prompts (:meth:`_encode`). Adds the mean
        unnormalised digit probability mass to the stats."""
        import torch

        share = self.share_prefix if share_prefix is None else share_prefix
        run = last_logprobs_shared if share else last_logprobs_full
        with torch.inference_mode():
            logprobs = run(self._model, self._cache_kw, self._tokenizer.pad_token_id, encoded)
        _, digit_ids = self._plan
        digit_lp = logprobs[:, digit_ids].double()  # (B*5, 10)
        mass = digit_lp.exp().sum(-1)
        self.count("digit_mass_sum", float(mass.sum()))
        self.count("digit_mass_n", int(mass.numel()))
        probs = torch.softmax(digit_lp, dim=-1)
        return probs.view(len(encoded), -1, 10)

    def stats(self) -> dict[str, float]:
        out = super().stats()
        n = out.pop("digit_mass_n", 0)
        total = out.pop("digit_mass_sum", 0.0)
        if n:
            out["mean_digit_mass"] = total / n  # how much next-token probability the digits get
        return out


class TransformersJudge(LocalJudge):
    name = "transformers"
    description = "Alias of the 'local' judge (a transformers causal LM; option model)."


__all__ = ["LocalJudge", "TransformersJudge", "resolve_device", "DIGITS"]
