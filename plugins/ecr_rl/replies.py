"""ECR-RL's inputs from ECR's stage-3 generator: the contexts whose template recommends a movie
(with the generator's requests) and sampled replies for the critic's judge data."""
from __future__ import annotations

import numpy as np
import torch


def generator_requests(state, samples, n: int, seed: int, salt: int, one_per_dialog: bool = False,
                       placeholder: str | None = None):
    """Up to ``n`` seeded samples whose ECR template recommends a movie (the replies ECR's
    stage-3 generator writes), with their ``(items, filled template)`` requests; with
    ``one_per_dialog``, from ``n`` different dialogues. With ``placeholder`` (training
    contexts only), a context whose generated template names no movie falls back to its
    reference template (the task's ``response_template``, as stage 3 trains on), so that a
    weak conversation model still leaves contexts to learn from; the second return value
    counts those."""
    from crsbench_plugins.ecr.pipeline import reply_requests, with_slot_token

    order = np.random.default_rng([seed, salt]).permutation(len(samples))
    chosen, dialogs = [], set()
    for start in range(0, len(order), max(64, n)):
        chunk = order[start:start + max(64, n)].tolist()
        batch = [samples[i] for i in chunk]
        found = reply_requests(state, batch)
        if placeholder is not None:
            refs = [s["response_template"] for s in with_slot_token(batch, placeholder)]
            for j, ref in enumerate(reply_requests(state, batch, templates=refs)):
                if not found[j][1] and ref[1]:
                    found[j] = (ref[0], ref[1], "reference template")
        for k, request in zip(chunk, found):
            if request[1] and not (one_per_dialog and samples[k]["dialog_id"] in dialogs):
                chosen.append((k, request))
                dialogs.add(samples[k]["dialog_id"])
        if len(chosen) >= n:
            break
    chosen = sorted(chosen[:n])
    requests = [(r[1], r[0]) for _, r in chosen]
    n_reference = sum(len(r) == 3 for _, r in chosen)
    return [samples[k] for k, _ in chosen], requests, n_reference


def sample_descriptions(model, tokenizer, prompts, n: int, temperature: float, top_p: float,
                        max_new_tokens: int, seed: int) -> list[list[str]]:
    """``n`` sampled continuations per prompt (diverse generator outputs for the judge)."""
    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    out = []
    for start in range(0, len(prompts), 16):
        chunk = prompts[start:start + 16]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                        max_length=model.config.n_positions - max_new_tokens
                        if hasattr(model.config, "n_positions") else 512).to(next(model.parameters()).device)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens, num_return_sequences=n,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        out += [[" ".join(t.split()) for t in texts[k * n:(k + 1) * n]] for k in range(len(chunk))]
    return out
