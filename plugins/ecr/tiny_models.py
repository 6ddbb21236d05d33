"""Tiny random-weight models of the paper profile's architecture classes, saved locally.

The paper profile names RoBERTa-base and DialoGPT-small (a GPT-2). To try that code path on
a CPU without downloading them, write a 2-layer GPT-2 and a 1-layer RoBERTa of the same
classes, sharing one word-level tokenizer, and pass their directories as backbones:

    python -m crsbench_plugins.ecr.tiny_models /tmp/tiny
    crsbench run unicrs --task redial --profile paper --limit 5 --device cpu \\
        --set lm.backbone=/tmp/tiny/dialogpt-tiny --set text_encoder=/tmp/tiny/roberta-tiny ...

The weights are random: the run exercises shapes, devices and stages, not quality.
"""
from __future__ import annotations

import sys
from pathlib import Path

# digits are single tokens because the paper profile's transformers judge reads scores 0-9
WORDS = ("the a movie you i like love watch film great good seen it is was <movie> ? . , User: System: "
         "0 1 2 3 4 5 6 7 8 9").split()
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]


def write_tiny_backbones(root: Path | str) -> tuple[Path, Path]:
    """Write ``root/dialogpt-tiny`` (GPT-2, 2 x 32) and ``root/roberta-tiny`` (RoBERTa, 1 x 24);
    return the two directories."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, RobertaConfig,
                              RobertaModel)

    root = Path(root)
    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<s>", eos_token="</s>", mask_token="<mask>")
    gpt_dir, roberta_dir = root / "dialogpt-tiny", root / "roberta-tiny"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_layer=2, n_head=2, n_embd=32, n_positions=512,
                               bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"])
                    ).save_pretrained(gpt_dir)
    tok.save_pretrained(gpt_dir)
    RobertaModel(RobertaConfig(vocab_size=len(vocab), hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=48, max_position_embeddings=300, pad_token_id=0)
                 ).save_pretrained(roberta_dir)
    tok.save_pretrained(roberta_dir)
    return gpt_dir, roberta_dir


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m crsbench_plugins.ecr.tiny_models DIRECTORY", file=sys.stderr)
        return 2
    for path in write_tiny_backbones(args[0]):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
