"""Emotion labels of seeker utterances (ECR, Zhang et al., RecSys 2024, section 3.1).

The paper had an LLM label 5,082 seeker utterances with up to two of nine emotions, trained
a classifier on those labels and let it label every other utterance; an utterance keeps the
labels whose probability exceeds beta = 0.1. The LLM labels are not public, so here:

- an :class:`Annotator` produces a probability distribution over :data:`EMOTIONS` per text;
  the default, :class:`LexiconAnnotator`, is a documented rule/lexicon annotator built on
  VADER (works offline, deterministic). Any object with ``annotate(texts)`` can replace it
  (:func:`make_annotator`; the ``"llm"`` name is the hook point for an LLM-judge annotator);
- :class:`EmotionClassifier` is an MLP head over frozen :class:`TextEncoder` embeddings,
  trained on the annotator's soft labels for a seeded subset of train-split seeker
  utterances (5,082 by default, as in the paper), then used to label all of them;
- :func:`keep_labels` applies beta and the two-label limit; :func:`annotate_samples` gives,
  per sample, the emotion distribution of each seeker turn in its context.

``python -m crsbench_plugins.ecr.emotion`` prints the label distribution of the train-split
seeker utterances and the classifier's held-out agreement with the annotator.

This module is the public entry point (``make_annotator``, ``register_annotator`` and
``EmotionClassifier`` are documented here) and the command; the parts live in
``emotion_base`` (labels, the annotator contract), ``lexicon_annotator``,
``annotator_registry`` and ``emotion_classifier``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from crsbench_plugins.ecr.annotator_registry import ANNOTATORS, make_annotator, register_annotator
from crsbench_plugins.ecr.emotion_base import (BETA, EMOTIONS, MAX_LABELS, PAPER_N_ANNOTATED, Annotator,
                                               CallableAnnotator, SupportsAnnotate, keep_labels, label_distribution,
                                               normalize_probs, top_label)
from crsbench_plugins.ecr.emotion_classifier import EmotionClassifier, agreement, annotate_samples, seeker_utterances
from crsbench_plugins.ecr.lexicon_annotator import (CUE_CAP, CUES, NOT_CUES, VADER_NEUTRAL_WORDS, LexiconAnnotator,
                                                    mask_mentions)

# Re-exported: callers outside this plugin (the rewards plugin, users of the documented API)
# import these from here.
__all__ = [
    "ANNOTATORS", "BETA", "CUES", "CUE_CAP", "EMOTIONS", "MAX_LABELS", "NOT_CUES", "PAPER_N_ANNOTATED",
    "VADER_NEUTRAL_WORDS", "Annotator", "CallableAnnotator", "EmotionClassifier", "LexiconAnnotator",
    "SupportsAnnotate", "agreement", "annotate_samples", "keep_labels", "label_distribution", "main",
    "make_annotator", "mask_mentions", "normalize_probs", "register_annotator", "seeker_utterances", "top_label",
]


# --------------------------------------------------------------------------------------------
# python -m crsbench_plugins.ecr.emotion
# --------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m crsbench_plugins.ecr.emotion",
                                     description="Label distribution of a task's seeker utterances and the emotion "
                                                 "classifier's held-out agreement with the annotator.")
    parser.add_argument("--task", default="redial", help="a registered task (crsbench list tasks)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--annotator", default="lexicon")
    parser.add_argument("--n-train", type=int, default=PAPER_N_ANNOTATED)
    parser.add_argument("--n-heldout", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads for encoding (default: torch's)")
    parser.add_argument("--save", help="write the trained classifier here (.safetensors)")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args(argv)

    from crsbench.plugins import lookup  # any registered task, by name: no task module imported here

    task = lookup("tasks", args.task).obj()
    texts = seeker_utterances(task.load().splits[args.split])
    annotator = (make_annotator("lexicon", mention_spans=task.mention_spans) if args.annotator == "lexicon"
                 else make_annotator(args.annotator))
    t0 = time.perf_counter()
    dist = label_distribution(annotator.annotate(texts))
    t_annotate = time.perf_counter() - t0
    from crsbench_plugins.ecr.text_encoder import get_encoder

    encoder = get_encoder(num_threads=args.threads) if args.threads else get_encoder()
    clf = EmotionClassifier(encoder=encoder, annotator=annotator, seed=args.seed)
    report = clf.fit(texts, n_train=args.n_train, n_heldout=args.n_heldout, progress=True)
    t0 = time.perf_counter()
    clf_dist = label_distribution(clf.annotate(texts))
    t_label = time.perf_counter() - t0

    def row(name, d):
        return f"{name:<26}" + "".join(f"{100 * d[label]:>10.1f}" for label in EMOTIONS)

    print(f"{len(texts)} distinct seeker utterances in the {args.split} split; annotator {annotator.name} "
          f"({t_annotate:.1f} s)")
    print(f"{'% of utterances':<26}" + "".join(f"{label:>10}" for label in EMOTIONS))
    print(row("annotator top-1", dist["top1"]))
    print(row("annotator kept (b=0.1,<=2)", dist["kept"]))
    print(row("labelled top-1", clf_dist["top1"]))
    print(row("labelled kept", clf_dist["kept"]))
    print(f"mean kept labels: annotator {dist['mean_kept_labels']:.2f}, labelled {clf_dist['mean_kept_labels']:.2f}")
    print(f"classifier held-out agreement ({report['n_heldout']} texts, trained on {report['n_train']}): "
          f"top-1 {report['top1']:.3f} (majority label {report['majority_label']!r}: {report['majority_rate']:.3f}), "
          f"soft CE {report['soft_ce']:.3f}, KL {report['kl']:.3f}, kept-label Jaccard {report['kept_jaccard']:.3f}; "
          f"train top-1 {report['train_agreement_top1']:.3f}")
    print("held-out top-1 recall per annotator label: "
          + ", ".join(f"{label} {recall:.2f}" for label, recall in report["top1_recall"].items()))
    print(f"seconds: {report['seconds']}, labelling all {len(texts)}: {t_label:.1f}")
    out = {"split": args.split, "n_texts": len(texts), "annotator": dist, "labelled": clf_dist, "report": report}
    if args.save:
        clf.save(args.save)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
