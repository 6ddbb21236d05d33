"""ECR generator machinery: tokenizer, backbone, prompted-LM training with exact resume, decoding.

Models are tiny random-weight GPT-2s built locally (no hub downloads); text is real ReDial.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from crsbench.errors import UserError
from crsbench_plugins.ecr.lm_build import build_backbone, train_tokenizer
from crsbench_plugins.ecr.lm_common import MOVIE, SEP
from crsbench_plugins.ecr.lm_data import PromptedLM, lm_inputs, lm_loss_sum
from crsbench_plugins.ecr.lm_decode import generate
from crsbench_plugins.ecr.lm_train import train_lm

TINY = {"backbone": "scratch-gpt2", "n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128,
        "dropout": 0.1, "seed": 0}
TRAIN = {"epochs": 3, "batch_size": 8, "grad_accum": 2, "lr": 3e-3, "warmup_steps": 2, "cpu": True,
         "max_length": 128, "max_target_length": 48, "seed": 7}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The test machine is small and shared: 2-thread OpenMP kernels spin against other
    # processes and run many times slower than one thread for these tiny matrices.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def redial():
    from crsbench_tasks.redial.task import RedialTask

    rows = RedialTask().load(limit=30).splits["train"].select(range(400))
    texts = list(rows["response"]) + [turn for ctx in rows["context"] for turn in ctx]
    examples = [{"prompt": f" {SEP} ".join(r["context"][-2:]) + f" {SEP}", "target": " " + r["response_template"]}
                for r in rows.select(range(150)) if r["context"]][:100]
    assert len(examples) == 100
    return texts, examples


@pytest.fixture(scope="module")
def tok(redial, tmp_path_factory):
    return train_tokenizer(redial[0], 1000, tmp_path_factory.mktemp("tok"))


def tiny_model(tok, **overrides):
    model, _ = build_backbone({**TINY, **overrides}, tok)
    return model


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- tokenizer

def test_tokenizer_roundtrip_and_determinism(redial, tok, tmp_path):
    from transformers import AutoTokenizer

    assert len(tok) == 1000
    assert tok.convert_tokens_to_ids([MOVIE, SEP]) == [4, 5]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    for text in ["Have you seen <movie> ? It's great!", "I liked <movie> and <movie><sep> yes",
                 "  odd  spacing é ü "]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok("<movie>", add_special_tokens=False)["input_ids"] == [4]
    # special tokens are stripped, the placeholders are not
    ids = tok("a <movie> b", add_special_tokens=False)["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == "a <movie> b"

    again = train_tokenizer(redial[0], 1000, tmp_path / "again")
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path / "again"))
    text = redial[0][0] + " <movie>"
    assert reloaded(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]


def test_prompted_lm_masks_prompt_and_truncates_left(tok):
    eos = tok.eos_token_id
    long_prompt = " ".join(["word"] * 200) + " END <sep>"
    data = PromptedLM([{"prompt": long_prompt, "target": " hi <movie>"},
                       {"prompt": "short <sep>", "target": " ok", "prefix": torch.zeros(3, 8)}],
                      tok, max_length=32, max_target_length=10)
    item = data[0]
    assert len(item["input_ids"]) == 32
    target = tok(" hi <movie>", add_special_tokens=False)["input_ids"] + [eos]
    assert item["labels"].tolist() == [-100] * (32 - len(target)) + target
    assert item["input_ids"][-len(target):].tolist() == target
    # the prompt keeps its end
    assert tok.decode(item["input_ids"][: 32 - len(target)]).endswith("END <sep>")
    assert len(data[1]["input_ids"]) <= 32 - 3
    batch = data.collate([data[0], data[1]])
    assert batch["attention_mask"].sum(1).tolist() == [32, len(data[1]["input_ids"])]
    assert batch["attention_mask"][1, -1] == 1 and batch["attention_mask"][1, 0] == 0  # left padded


def test_loss_is_padding_invariant_and_matches_transformers(redial, tok):
    model = tiny_model(tok, dropout=0.0)
    data = PromptedLM(redial[1][:4], tok, 128, 48)
    with torch.no_grad():
        batch_loss, batch_count = lm_loss_sum(model, data.collate([data[i] for i in range(4)]))
        singles = [lm_loss_sum(model, data.collate([data[i]])) for i in range(4)]
        item = data[0]
        reference = model(input_ids=item["input_ids"][None], labels=item["labels"][None]).loss
    assert batch_count == sum(n for _, n in singles) == sum(data.n_target_tokens(i) for i in range(4))
    assert float(batch_loss) == pytest.approx(sum(float(loss) for loss, _ in singles), rel=1e-5)
    assert float(singles[0][0]) / singles[0][1] == pytest.approx(float(reference), rel=1e-5)


# --------------------------------------------------------------------------- training

def test_training_lowers_loss_and_is_cached(redial, tok, tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_model(tok)
    stage = tmp_path / "stage"
    result = train_lm(model, tok, redial[1], {**TRAIN, "epochs": 4}, stage, progress=False)
    steps_per_epoch = -(-len(redial[1]) // 16)
    assert len(result["losses"]) == result["steps"] == 4 * steps_per_epoch
    assert len(result["epoch_loss"]) == 4 and result["seconds"] > 0
    assert result["epoch_loss"][-1] < result["epoch_loss"][0] - 1.0
    for name in ("done", "loss.png", "trainer_state.json", "epoch-4/model.safetensors", "epoch-4/optimizer.pt",
                 "model/model.safetensors", "model/tokenizer.json"):
        assert (stage / name).exists(), name
    assert not (stage / "epoch-3").exists()  # keep_checkpoints=1
    trained = state(model)
    loaded = AutoModelForCausalLM.from_pretrained(str(stage / "model"))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in trained.items())

    # a finished stage is not trained again: weights come from disk, history is returned
    fresh = tiny_model(tok, seed=123)
    again = train_lm(fresh, tok, redial[1], {**TRAIN, "epochs": 4}, stage, progress=False)
    assert again["losses"] == result["losses"] and again["resumed_from"] == 4
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in trained.items())
    # ... but a different run in the same directory is refused
    with pytest.raises(UserError, match="different run"):
        train_lm(fresh, tok, redial[1], {**TRAIN, "epochs": 4, "lr": 1e-3}, stage, progress=False)


class Crash(Exception):
    pass


def test_interrupted_run_resumes_to_identical_weights(redial, tok, tmp_path):
    examples = redial[1][:90]  # 6 steps of 16 per epoch, the last one short (10 = 8 + 2)
    full = tiny_model(tok)
    reference = train_lm(full, tok, examples, TRAIN, tmp_path / "full", progress=False)

    def crash_after_first(epoch, _state):
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        train_lm(tiny_model(tok), tok, examples, TRAIN, tmp_path / "resumed", progress=False,
                 on_epoch_end=crash_after_first)
    assert (tmp_path / "resumed" / "epoch-1").is_dir() and not (tmp_path / "resumed" / "done").exists()
    # a different initialisation proves the weights really come from the checkpoint
    resumed_model = tiny_model(tok, seed=99)
    resumed = train_lm(resumed_model, tok, examples, TRAIN, tmp_path / "resumed", progress=False)

    assert resumed["resumed_from"] == 1
    assert resumed["losses"] == reference["losses"]
    full_state = full.state_dict()
    for key, value in resumed_model.state_dict().items():
        assert torch.equal(value, full_state[key]), key


def test_prefix_examples_and_trainable_prefix_fn(redial, tok, tmp_path):
    gen = torch.Generator().manual_seed(0)
    examples = [{**ex, "prefix": torch.randn(1 + i % 3, 64, generator=gen) * 0.02}
                for i, ex in enumerate(redial[1][:40])]
    model = tiny_model(tok, dropout=0.0)
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = state(model)

    class PromptEncoder(torch.nn.Module):  # a stand-in for an entity-conditioned prompt encoder
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.zeros(4, 64))

        def forward(self, batch_examples):
            return self.table.unsqueeze(0).expand(len(batch_examples), -1, -1)

    encoder = PromptEncoder()
    result = train_lm(model, tok, examples, {**TRAIN, "epochs": 2, "prefix_tokens": 4, "lr": 1e-2},
                      tmp_path / "p", progress=False, prefix_fn=encoder)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    assert encoder.table.abs().sum() > 0
    assert result["epoch_loss"][1] < result["epoch_loss"][0]
    assert (tmp_path / "p" / "epoch-2" / "prefix.safetensors").exists()
    assert (tmp_path / "p" / "model" / "prefix.safetensors").exists()

    # the prefix sits before the prompt and carries no loss
    data = PromptedLM(examples[:3], tok, 128, 48, prefix_tokens=4)
    kwargs, labels = lm_inputs(model, data.collate([data[0], data[1], data[2]]), encoder([0, 1, 2]))
    for row in range(3):  # left padded: [pad][prefix_fn output][example prefix][prompt][target]
        start = int(kwargs["attention_mask"][row].argmax())
        n_pre = examples[row]["prefix"].shape[0]
        assert kwargs["position_ids"][row, start] == 0
        assert torch.equal(kwargs["inputs_embeds"][row, start: start + 4], encoder.table.detach())
        assert torch.equal(kwargs["inputs_embeds"][row, start + 4: start + 4 + n_pre], examples[row]["prefix"])
        assert (labels[row, : start + 4 + n_pre + len(data.prompt_ids[row])] == -100).all()
        assert labels[row, -1] == tok.eos_token_id


# --------------------------------------------------------------------------- decoding

PROMPTS = ["Hi! I like horror movies <sep>", "<sep>", "Have you seen <movie> ? <sep> no, what is it about? <sep>",
           "I loved <movie> and <movie> when I was a kid, any comedy like those? <sep>", "hello <sep> hi <sep>"]


def test_generation_deterministic_and_batch_invariant(tok):
    model = tiny_model(tok, seed=3)  # random weights: varied tokens, no early eos
    one = [generate(model, tok, [p], 12, batch_size=1, progress=False)[0] for p in PROMPTS]
    batched = generate(model, tok, PROMPTS, 12, batch_size=4, progress=False)
    assert batched == one
    assert generate(model, tok, PROMPTS, 12, batch_size=5, progress=False) == batched
    assert model.training  # mode restored
    assert len(set(batched)) > 1 and all(b for b in batched)


def test_generation_matches_transformers_generate(tok):
    model = tiny_model(tok, seed=4).eval()
    prompt = PROMPTS[3]
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=15, do_sample=False,
                         num_beams=1, no_repeat_ngram_size=3, use_cache=True, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id)
    expected = tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert generate(model, tok, [prompt], 15, no_repeat_ngram_size=3, progress=False) == [expected]


def test_no_repeat_ngram(tok):
    model = tiny_model(tok, seed=5)
    words = ["Ġthe", "Ġa", "Ġmovie", "Ġis", "Ġgood", "Ġyou"]
    ids = tok.convert_tokens_to_ids(words)
    assert tok.unk_token_id not in ids
    bias = torch.full((len(tok),), -100.0)
    bias[ids] = 10.0 - torch.arange(len(ids), dtype=torch.float)  # prefers "the", then "a", ...
    model.lm_head.register_forward_hook(lambda module, inputs, output: output * 0 + bias)
    assert generate(model, tok, ["x"], 5, no_repeat_ngram_size=0, progress=False) == ["the the the the the"]
    out = generate(model, tok, ["x"], 10, no_repeat_ngram_size=2, progress=False)[0].split()
    assert len(out) == 10 and out[:3] == ["the", "the", "a"]
    bigrams = list(zip(["x"] + out, out))
    assert len(bigrams) == len(set(bigrams))


def test_prefixes_in_generation(tok):
    model = tiny_model(tok, seed=6)
    embed = model.get_input_embeddings()
    head, tail = "I loved <movie> <sep>", " any comedy like that? <sep>"
    head_ids = tok(head, add_special_tokens=False)["input_ids"]
    assert tok(head + tail, add_special_tokens=False)["input_ids"][: len(head_ids)] == head_ids
    # a prefix made of the head's own embeddings is the same as the head as text
    as_prefix = generate(model, tok, [tail], 10, no_repeat_ngram_size=0, progress=False,
                         prefixes=[embed.weight[head_ids].detach()])
    assert as_prefix == generate(model, tok, [head + tail], 10, no_repeat_ngram_size=0, progress=False)

    gen = torch.Generator().manual_seed(1)
    prefixes = [torch.randn(k, 64, generator=gen) for k in (1, 5, 0, 3, 2)]
    prefixes[2] = None
    one = [generate(model, tok, [p], 10, batch_size=1, prefixes=[q], progress=False)[0]
           for p, q in zip(PROMPTS, prefixes)]
    assert generate(model, tok, PROMPTS, 10, batch_size=3, prefixes=prefixes, progress=False) == one
    assert one != generate(model, tok, PROMPTS, 10, progress=False)


# --------------------------------------------------------------------------- paper profile

def test_pretrained_backbone_path_dialogpt_architecture(redial, tmp_path):
    """A tiny random GPT2LMHeadModel + GPT-2-style tokenizer saved like DialoGPT is loaded from disk."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(redial[0], trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    hub_tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                      unk_token="<|endoftext|>")
    config = GPT2Config(vocab_size=len(hub_tok), n_positions=128, n_embd=64, n_layer=2, n_head=2,
                        bos_token_id=hub_tok.eos_token_id, eos_token_id=hub_tok.eos_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(str(tmp_path / "dialogpt-tiny"))
    hub_tok.save_pretrained(str(tmp_path / "dialogpt-tiny"))

    model, tok = build_backbone({"backbone": str(tmp_path / "dialogpt-tiny"), "seed": 0, "local_files_only": True})
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert len(tok) == 603 and tok.pad_token == "<pad>" and tok.eos_token == "<|endoftext|>"
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == model.config.vocab_size
    assert model.config.pad_token_id == tok.pad_token_id
    text = "I liked <movie> <sep> ok"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text

    result = train_lm(model, tok, redial[1][:32], {**TRAIN, "epochs": 2}, tmp_path / "stage", progress=False)
    assert result["epoch_loss"][1] < result["epoch_loss"][0]
    outs = generate(model, tok, PROMPTS[:3], 8, batch_size=2, progress=False)
    assert outs == [generate(model, tok, [p], 8, progress=False)[0] for p in PROMPTS[:3]]


# --------------------------------------------------------------------------- distributed

DIST_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from transformers import AutoTokenizer
    from safetensors.torch import save_file
    from crsbench_plugins.ecr.lm_build import build_backbone
    from crsbench_plugins.ecr.lm_train import train_lm
    tok_dir, data_file, stage, out = sys.argv[1:5]
    tok = AutoTokenizer.from_pretrained(tok_dir)
    examples = json.loads(open(data_file).read())
    model, _ = build_backbone({"backbone": "scratch-gpt2", "n_layer": 2, "n_head": 2, "n_embd": 64,
                               "n_positions": 128, "dropout": 0.0, "seed": 0}, tok)
    result = train_lm(model, tok, examples, {"epochs": 2, "batch_size": 8, "grad_accum": 2, "lr": 3e-3,
                      "warmup_steps": 2, "cpu": True, "max_length": 128, "seed": 7}, stage, progress=False)
    import torch.distributed as dist
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if rank == 0:
        weights = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
        save_file(weights, out + ".safetensors")
        json.dump({"losses": result["losses"], "world": world}, open(out + ".json", "w"))
""")


@pytest.mark.slow
def test_two_process_training_matches_one_process(redial, tok, tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU) vs. one process, same global batch.

    Both runs see the same micro-batches in the same order; each process's loss is its
    summed token loss over the *global* target-token count (times world size, since DDP
    averages), so the averaged gradient is the one-process gradient. Dropout is off. What
    remains is float summation order (two half-size matmuls + an all-reduce instead of one
    batch, different padding widths): measured 1e-7 relative on the losses and 9e-6 absolute
    on the weights after 14 Adam steps (Adam's normalisation amplifies tiny differences in
    near-zero gradient entries). A real error is far larger: weighting each process's own
    token mean instead (the usual DDP mistake) gives 2e-3 on the losses and 3e-2 on the
    weights. Tolerances: 1e-5 relative on losses, 1e-4 absolute on weights.
    97 examples: the last micro-batch has a single example, so rank 1 runs the zero-weight
    dummy path there.
    """
    from safetensors.torch import load_file

    tok.save_pretrained(str(tmp_path / "tok"))
    (tmp_path / "data.json").write_text(json.dumps(redial[1][:97]))
    (tmp_path / "script.py").write_text(DIST_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    common = [str(tmp_path / "script.py"), str(tmp_path / "tok"), str(tmp_path / "data.json")]
    one = subprocess.run([sys.executable, *common, str(tmp_path / "s1"), str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *common, str(tmp_path / "s2"), str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]

    r1, r2 = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert (r1["world"], r2["world"]) == (1, 2)
    assert len(r1["losses"]) == len(r2["losses"]) == 2 * 7
    assert r1["losses"] == pytest.approx(r2["losses"], rel=1e-5)
    w1, w2 = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert diff < 1e-4, f"max weight difference {diff:.2e}"
    for rank in (0, 1):
        assert (tmp_path / "s2" / "epoch-2" / f"rng-{rank}.pt").exists()
