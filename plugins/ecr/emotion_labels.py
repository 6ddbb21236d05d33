"""Emotion vectors for seeker utterances, as the recommender consumes them.

The annotator labels a sample of training utterances, the classifier learns from those
labels and labels everything else (``emotion_classifier.EmotionClassifier``); each utterance keeps
its labels above beta (at most two), renormalised, as a 9-dim vector.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from crsbench_plugins.ecr.annotator_registry import make_annotator
from crsbench_plugins.ecr.emotion_base import EMOTIONS, keep_labels
from crsbench_plugins.ecr.emotion_classifier import EmotionClassifier


class EmotionLabeler:
    def __init__(self, classifier: EmotionClassifier, beta: float, max_labels: int):
        self.classifier, self.beta, self.max_labels = classifier, beta, max_labels
        self.report = classifier.report
        self._memo: dict[str, np.ndarray] = {}

    @classmethod
    def fit(cls, ecfg: dict, texts: list[str], encoder, out_dir: Path, seed: int,
            mention_spans=None) -> "EmotionLabeler":
        """``mention_spans``: the task's (TaskData.mention_spans), masked by the lexicon annotator."""
        from crsbench import distributed

        path = Path(out_dir) / "classifier.safetensors"
        if not path.exists() and distributed.is_main():  # one writer; other processes load it
            annotator = (make_annotator("lexicon", mention_spans=mention_spans) if ecfg["annotator"] == "lexicon"
                         else ecfg["annotator"])
            clf = EmotionClassifier(encoder=encoder.encoder, annotator=annotator,
                                    epochs=ecfg["classifier_epochs"], seed=seed)
            clf.fit(texts, n_train=ecfg["classifier_train"], progress=encoder.progress)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".classifier.tmp{os.getpid()}.safetensors")
            clf.save(tmp)
            os.replace(tmp, path)
        distributed.barrier()
        clf = EmotionClassifier.load(path, encoder=encoder.encoder)
        return cls(clf, ecfg["beta"], ecfg["max_labels"])

    def vectors(self, texts: list[str]) -> dict[str, np.ndarray]:
        todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if todo:
            for text, probs in zip(todo, self.classifier.annotate(todo)):
                vec = np.zeros(len(EMOTIONS), dtype=np.float32)
                for label, p in keep_labels(probs, self.beta, self.max_labels, renormalize=True):
                    vec[EMOTIONS.index(label)] = p
                self._memo[text] = vec
        return {t: self._memo[t] for t in texts}
