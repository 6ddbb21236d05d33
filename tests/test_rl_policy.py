"""ECR-RL policy optimisation (plugins/ecr_rl/policy.py) on a tiny random-weight GPT-2.

The model (2 layers, 32 dims) and its word-level tokenizer are built locally; no downloads.
Each training test runs TRL for real on CPU (about 0.1-0.2 s per step with one thread).
"""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from crsbench import DegenerateRunError, UserError  # noqa: E402
from crsbench_plugins.ecr_rl.policy import LOG_KEYS, rl_finetune  # noqa: E402

WORDS = ("the movie was good and i liked it a lot . you should watch this film it is great fun "
         "i did not like the ending but the actors were nice . have you seen it ? yes no maybe").split()
PROMPTS = ["the movie was", "have you seen it ?", "i liked", "you should watch", "the actors were",
           "did you like the ending ?"]
TARGET = "good"


@pytest.fixture(autouse=True)
def one_thread():
    # tiny matmuls: with 2 threads on a shared machine, thread contention costs 10-50x
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_model(seed: int = 0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", "<unk>"] + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")   # joins the words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                        eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg), tokenizer


def target_reward(prompts, completions):
    """Learnable: the share of completion words that are TARGET (plus a logged-only length component)."""
    assert len(prompts) == len(completions) and all(p in PROMPTS for p in prompts)
    share = [c.split().count(TARGET) / max(1, len(c.split())) for c in completions]
    length = [len(c.split()) / 8 for c in completions]
    return share, {TARGET: share, "length": length}


def constant_reward(prompts, completions):
    return [0.5] * len(completions), {"constant": [0.5] * len(completions)}


def base_cfg(**kw):
    cfg = dict(steps=4, batch_size=4, num_generations=4, lr=3e-3, beta=0.01, max_new_tokens=8, seed=0,
               min_reward_std=1e-4, patience=5, max_kl=None, collapse_patience=5)
    cfg.update(kw)
    return cfg


def read_log(out):
    return [json.loads(line) for line in (out / "rl_log.jsonl").read_text().splitlines()]


def test_learnable_reward_goes_up_and_everything_is_logged(tmp_path):
    model, tok = tiny_model()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / "rl"
    report = rl_finetune(model, tok, PROMPTS, target_reward, base_cfg(steps=30), out, progress=False)

    rows = read_log(out)
    assert report["steps"] == len(rows) == 30 and report["stopped"] is None
    for row in rows:
        assert set(LOG_KEYS) <= set(row), set(LOG_KEYS) - set(row)
        assert set(row["components"]) == {TARGET, "length"}
        assert all(set(v) == {"mean", "std", "group_std"} and v["group_std"] <= v["std"] + 1e-12
                   for v in row["components"].values())
        assert row["kl"] is not None and row["loss"] is not None and row["n_completions"] == 16
        assert 0 < row["completion_length"] <= 8 and 1 <= row["distinct_completions"] <= 16
        assert row["reward_mean"] == pytest.approx(row["components"][TARGET]["mean"])
    first = sum(r["reward_mean"] for r in rows[:5]) / 5
    last = sum(r["reward_mean"] for r in rows[-5:]) / 5
    print(f"\nmean reward, first 5 steps {first:.4f} -> last 5 steps {last:.4f}; "
          f"KL last {rows[-1]['kl']:.4f}; {report['seconds_per_step']:.3f} s/step")
    assert last > first + 0.05, (first, last)
    assert report["final"]["reward_mean"] == pytest.approx(last)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)        # the policy starts at the reference
    assert rows[-1]["kl"] > 0

    assert (out / "rl_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "policy" / "model.safetensors").exists() and (out / "policy" / "done.json").exists()
    assert (out / "reference" / "model.safetensors").exists()
    policy = report["model"]
    assert type(policy).__name__ == "GPT2LMHeadModel"
    assert any(not torch.equal(reference[k], v) for k, v in policy.state_dict().items() if k in reference)
    assert all(torch.equal(reference[k], v) for k, v in model.state_dict().items())   # caller's model untouched

    again = rl_finetune(model, tok, PROMPTS, target_reward, base_cfg(steps=30), out, progress=False)
    assert again["resumed"] and again["steps"] == 30
    assert all(torch.equal(policy.state_dict()[k], v) for k, v in again["model"].state_dict().items())
    with pytest.raises(UserError, match="other options"):
        rl_finetune(model, tok, PROMPTS, target_reward, base_cfg(steps=31), out, progress=False)


def test_constant_reward_stops_with_the_std(tmp_path):
    model, tok = tiny_model()
    out = tmp_path / "rl"
    with pytest.raises(DegenerateRunError, match=r"reward std < 1e-04 for 3 consecutive steps") as err:
        rl_finetune(model, tok, PROMPTS, constant_reward, base_cfg(steps=10, patience=3), out, progress=False)
    assert "cannot rank" in str(err.value) and "0.0000" in str(err.value)
    rows = read_log(out)
    assert len(rows) == 3 and all(r["reward_std"] == 0 and r["reward_mean"] == 0.5 for r in rows)
    assert "reward std" in json.loads((out / "stopped.json").read_text())["reason"]
    assert (out / "rl_curves.png").exists() and not (out / "policy").exists()


def test_kl_bound_stops_the_run(tmp_path):
    model, tok = tiny_model()
    out = tmp_path / "rl"
    with pytest.raises(DegenerateRunError, match=r"KL to the reference .* > max_kl 1e-09"):
        rl_finetune(model, tok, PROMPTS, target_reward, base_cfg(steps=10, max_kl=1e-9), out, progress=False)
    rows = read_log(out)
    assert rows[-1]["kl"] > 1e-9 and len(rows) < 10


def test_collapsed_policy_stops_the_run(tmp_path):
    # one prompt, near-greedy sampling: every completion in the batch is the same string
    model, tok = tiny_model()
    out = tmp_path / "rl"
    cfg = base_cfg(steps=10, batch_size=2, temperature=1e-4, patience=100, collapse_patience=2)
    with pytest.raises(DegenerateRunError, match=r"all 8 completions identical for 2 consecutive steps"):
        rl_finetune(model, tok, ["the movie was"] * 2, target_reward, cfg, out, progress=False)
    assert [r["distinct_completions"] for r in read_log(out)] == [1, 1]


def test_rloo_runs(tmp_path):
    model, tok = tiny_model()
    out = tmp_path / "rl"
    report = rl_finetune(model, tok, PROMPTS, target_reward, base_cfg(steps=2, algorithm="rloo"), out,
                         progress=False)
    rows = read_log(out)
    assert report["algorithm"] == "rloo" and report["steps"] == len(rows) == 2
    assert all(r["kl"] is not None and r["loss"] is not None for r in rows)
    assert (out / "policy" / "model.safetensors").exists()


@pytest.mark.parametrize("bad, match", [
    ({"beta": 0.0}, "beta"),
    ({"num_generations": 1}, "num_generations"),
    ({"algorithm": "ppo"}, "algorithm"),
    ({"max_kL": 1.0}, "unknown option"),
    ({"batch_size": 7}, "batch_size 7 > number of prompts 6"),
])
def test_bad_options(tmp_path, bad, match):
    model, tok = tiny_model()
    with pytest.raises(UserError, match=match):
        rl_finetune(model, tok, PROMPTS, target_reward, base_cfg(**bad), tmp_path / "rl", progress=False)
