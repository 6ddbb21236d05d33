"""Which frozen LM the CPU profile can afford: seconds per training step of the prompt path
(prompt encoder -> past keys/values -> frozen LM -> last hidden state -> entity scores,
forward + backward) at the CPU profile's shapes, for candidate LMs.

    .venv/bin/python bench/lm_choice.py [--steps 3] [--batch 64]

SmolLM2-135M is measured with a randomly initialised Llama of its exact configuration
(same shapes, so the same speed; the bundled GGUF weights would not change the time).
Writes bench/results/lm-choice.json. Benchmarks measure; tests never assert on these numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def candidates():
    from transformers import GPT2Config, LlamaConfig

    yield "gpt2 2x128 (cpu profile)", GPT2Config(vocab_size=8000, n_layer=2, n_head=4, n_embd=128, n_positions=256)
    yield "gpt2 4x256", GPT2Config(vocab_size=8000, n_layer=4, n_head=4, n_embd=256, n_positions=256)
    yield "gpt2 12x768 (DialoGPT-small shapes)", GPT2Config(vocab_size=50257, n_layer=12, n_head=12, n_embd=768)
    yield "SmolLM2-135M shapes (llama)", LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True)


def main() -> None:
    from transformers import AutoModelForCausalLM

    from crsbench_plugins.ecr.pipeline import rec_scores, weighted_rec_loss
    from crsbench_plugins.ecr.prompt_model import KGPromptEncoder, LMShape

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--context", type=int, default=96, help="LM tokens (CPU profile context_max_length)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n_entities = 31161
    edges = np.stack([rng.integers(0, n_entities, 60000), rng.integers(0, 12, 60000),
                      rng.integers(0, n_entities, 60000)], 1)
    rows = []
    for name, cfg in candidates():
        torch.manual_seed(0)
        lm = AutoModelForCausalLM.from_config(cfg).eval().requires_grad_(False)
        enc = KGPromptEncoder(LMShape(lm.config), token_dim=384, num_entities=n_entities, num_relations=12,
                              edges=edges, num_bases=4, n_prefix_rec=10, n_prefix_conv=20, n_emotions=9,
                              local_emotion=True)
        opt = torch.optim.AdamW(enc.parameters(), lr=1e-4)
        b = args.batch
        batch = {"entities": torch.as_tensor(rng.integers(0, n_entities, (b, 16))),
                 "tokens": torch.randn(b, 96, 384), "token_mask": torch.ones(b, 96, dtype=torch.bool),
                 "entity_emotions": torch.rand(b, 16, 9),
                 "input_ids": torch.as_tensor(rng.integers(3, 4000, (b, args.context))),
                 "attention_mask": torch.ones(b, args.context, dtype=torch.long),
                 "label_rows": torch.arange(b), "labels": torch.as_tensor(rng.integers(0, n_entities, b)),
                 "weights": torch.ones(b)}
        times = []
        for _ in range(args.steps + 1):
            t0 = time.perf_counter()
            loss = weighted_rec_loss(rec_scores(enc, lm, batch), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        step = float(np.median(times[1:]))
        rows.append({"lm": name, "lm_parameters": sum(p.numel() for p in lm.parameters()),
                     "seconds_per_step": round(step, 3), "batch": b, "context_tokens": args.context,
                     "stage2_epoch_minutes_at_4800_samples": round(step * 4800 / b / 60, 2)})
        print(rows[-1], flush=True)
        del lm, enc, opt
    out = {"command": "bench/lm_choice.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                       "torch_threads": torch.get_num_threads()},
           "load_average_after": os.getloadavg(), "rows": rows}
    path = HERE / "results" / "lm-choice.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
