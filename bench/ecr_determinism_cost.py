"""The speed cost of deterministic kernels in ECR's recommendation training step.

One stage-2 step (prompt encoder forward, frozen LM, scores over every entity, weighted
cross-entropy, backward, AdamW) at the `cpu` profile's shapes: 31,161 entities (ReDial's
KG), entity dim 64, a 2-layer 128-d GPT-2, batch 64 with 32 context entities and 96 text
tokens, random KG edges of ReDial's count. Blocks of steps alternate between
``torch.use_deterministic_algorithms(False)`` and ``(True)`` so that load from other
processes falls on both alike; the median step time of each is reported.

    OMP_NUM_THREADS=2 .venv/bin/python bench/ecr_determinism_cost.py --blocks 6 --steps 4 \
        --output bench/results/ecr-determinism-cost.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import GPT2Config, GPT2LMHeadModel

    from crsbench_plugins.ecr.pipeline import rec_scores, weighted_rec_loss
    from crsbench_plugins.ecr.prompt_model import KGPromptEncoder, LMShape, freeze

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n_ent, n_edges, batch, n_ctx, n_tok = 31161, 160000, 64, 32, 96
    lm = freeze(GPT2LMHeadModel(GPT2Config(vocab_size=8000, n_layer=2, n_head=4, n_embd=128, n_positions=256)))
    edges = np.stack([rng.integers(0, n_ent, n_edges), rng.integers(0, 12, n_edges),
                      rng.integers(0, n_ent, n_edges)], 1)
    enc = KGPromptEncoder(LMShape(lm.config), token_dim=384, num_entities=n_ent, num_relations=12, edges=edges,
                          num_bases=4, n_prefix_rec=10, n_prefix_conv=20)
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-3)
    b = {"entities": torch.as_tensor(rng.integers(0, n_ent, (batch, n_ctx))),
         "tokens": torch.randn(batch, n_tok, 384), "token_mask": torch.ones(batch, n_tok, dtype=torch.bool),
         "entity_emotions": None, "input_ids": torch.as_tensor(rng.integers(0, 8000, (batch, 96))),
         "attention_mask": torch.ones(batch, 96, dtype=torch.long),
         "label_rows": torch.arange(batch).repeat_interleave(2), "labels": torch.as_tensor(rng.integers(0, n_ent, 2 * batch)),
         "weights": torch.ones(2 * batch)}

    def step() -> float:
        t0 = time.perf_counter()
        loss = weighted_rec_loss(rec_scores(enc, lm, b), b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    step()  # warm-up
    times = {False: [], True: []}
    for block in range(args.blocks):
        det = bool(block % 2)
        torch.use_deterministic_algorithms(det)
        times[det] += [step() for _ in range(args.steps)]
    torch.use_deterministic_algorithms(False)
    out = {"command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} .venv/bin/python bench/ecr_determinism_cost.py "
                      f"--blocks {args.blocks} --steps {args.steps} --threads {args.threads}",
           "threads": args.threads, "steps_each": len(times[True]),
           "median_step_s_default": statistics.median(times[False]),
           "median_step_s_deterministic": statistics.median(times[True]),
           "all_steps_s": {"default": times[False], "deterministic": times[True]},
           "load_average_at_end": os.getloadavg()}
    out["ratio"] = out["median_step_s_deterministic"] / out["median_step_s_default"]
    print(json.dumps({k: v for k, v in out.items() if k != "all_steps_s"}, indent=1))
    if args.output:
        tmp = args.output + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, args.output)


if __name__ == "__main__":
    main()
