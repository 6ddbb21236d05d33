"""Conversation templates (the UniCRS conversation stage): context -> reply with ``<movie>`` slots.

The generator sees the last turns and the names of the entities the dialogue mentioned
(the knowledge the fused prompt carries), and writes the recommender's turn with every
movie masked; the recommender later fills the slots, and stage 2 reads the template.
"""
from __future__ import annotations

from pathlib import Path

from crsbench_plugins.ecr import features as feat

MAX_PROMPT_ENTITIES = 6


def entity_names(state, entities) -> list[str]:
    names = []
    for e in list(entities)[-MAX_PROMPT_ENTITIES:]:
        if e in state.item_names:
            names.append(state.item_names[e])
        else:
            from crsbench_tasks.redial.kg import split_uri

            uri = state.kg.id2entity.get(e)
            if uri:
                names.append(split_uri(uri)[0])
    return names


def prompt_of(sample: dict, state) -> str:
    known = "; ".join(entity_names(state, sample["context_entities"])) or "none"
    return f"{feat.context_text(sample, state.config['context_turns'])} [Entities: {known}] System:"


def shared_lm(cfg: dict, train: list[dict], ckpt: Path):
    """Tokenizer (trained on the task's training text for a scratch backbone) and backbone factory."""
    from crsbench_plugins.ecr import generator

    gcfg = cfg["generator"]
    if gcfg["backbone"] == "scratch-gpt2":
        tok_dir = ckpt / "tokenizer"
        if (tok_dir / "tokenizer.json").exists():
            from transformers import PreTrainedTokenizerFast

            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
        else:
            texts = [t for s in train for t in s["context"]] + [s["response"] for s in train] + \
                    [s["response_template"] for s in train]
            tokenizer = generator.train_tokenizer(texts, gcfg["vocab_size"], tok_dir)
    else:
        tokenizer = None
    return tokenizer


class TemplateGenerator:
    def __init__(self, model, tokenizer, state, cfg, summary):
        self.model, self.tokenizer, self.state, self.cfg, self.summary = model, tokenizer, state, cfg, summary

    @classmethod
    def fit(cls, cfg, train, valid, state, stage_dir: Path, progress=True):
        from crsbench_plugins.ecr import generator

        stage_dir = Path(stage_dir)
        tokenizer = shared_lm(cfg, train, stage_dir.parent)
        model, tokenizer = generator.build_backbone(cfg["generator"], tokenizer)
        tcfg = dict(cfg["templates"], seed=state.seed)
        examples = [{"prompt": prompt_of(s, state), "target": s["response_template"]} for s in train
                    if s["response_template"].strip()]
        examples = seeded_subset(examples, tcfg.get("max_train"), state.seed)
        summary = generator.train_lm(model, tokenizer, examples, tcfg, stage_dir, progress=progress)
        model.eval()
        return cls(model, tokenizer, state, cfg, _short(summary))

    def generate(self, samples: list[dict]) -> list[str]:
        from crsbench_plugins.ecr import generator

        return generator.generate(self.model, self.tokenizer, [prompt_of(s, self.state) for s in samples],
                                  max_new_tokens=self.cfg["templates"]["max_new_tokens"],
                                  batch_size=self.cfg["decode"]["batch_size"],
                                  no_repeat_ngram_size=self.cfg["decode"]["no_repeat_ngram_size"],
                                  progress=False)


def seeded_subset(examples: list, n: int | None, seed: int) -> list:
    """At most ``n`` examples, drawn with the run's seed (order kept)."""
    if not n or n >= len(examples):
        return examples
    import numpy as np

    keep = np.random.default_rng([seed, 11]).choice(len(examples), size=n, replace=False)
    return [examples[i] for i in sorted(keep.tolist())]


def _short(summary: dict) -> dict:
    """The stage summary for the result file (per-epoch numbers, not every step)."""
    return {k: v for k, v in summary.items() if k != "losses"}
