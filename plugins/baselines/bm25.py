"""`bm25`: Okapi BM25 of the dialogue context against one text document per catalogue item.

A text-retrieval reference point between `popularity` and a learned recommender. Each item's
document is built from the task's **training split only**, through the Task API (no
task-specific parsing, so it runs on any task):

- the item's name (``TaskData.item_names``), its tokens counted ``name_weight`` times;
- for every training sample whose recommender turn names the item (``targets``), the last
  ``doc_context_turns`` turns of its context (0: the whole context), with ``doc_response``
  the turn itself without its item mentions (``response_template`` less the task's
  ``item_placeholder``), and the ``doc_after_turns`` turns that follow it in the dialogue
  (read from the later samples of the same dialogue, whose contexts extend this one's);
- where the task has a graph (``TaskData.kg``), the names of the item's neighbours (both
  directions, the item itself excluded), each counted ``kg_weight`` times (0: no graph).

A query is the last ``query_turns`` turns of the sample's context (0: all of it). Tokens are
lower-cased runs of letters and digits (``\\w+``), optionally without a short list of English
function words (``stopwords``). The score of item document D for query Q is

    score(D, Q) = sum over distinct terms t of Q of  qtf(t, Q) * IDF(t) * tf(t, D) * (k1 + 1)
                                                   / (tf(t, D) + k1 * (1 - b + b * |D| / avgdl))
    IDF(t) = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5))

with N the number of items, n(t) the number of item documents holding t, |D| a document's
token count and avgdl their mean (Robertson's BM25 with the non-negative IDF Lucene uses,
query term frequency counted linearly). Every item is ranked; ties (items sharing no word
with the context) are broken by training popularity, so an empty context gives the
`popularity` ranking. The model recommends only (no replies).

The defaults were chosen on ReDial's validation split, never on test, by the coordinate search
of ``python -m crsbench_plugins.baselines.bm25_validation`` (records in bm25_search/,
numbers in plugins/baselines/README.md).
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

from crsbench.errors import UserError
from crsbench_plugins.baselines.models import PopularityModel

TOKEN = re.compile(r"\w+")

# English function words, written for this model (no external list). Content words such as
# "like", "good" or "funny" stay: they carry the seeker's preferences.
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she
should so some such than that the their theirs them themselves then there these they this those
through to too under until up very was we were what when where which while who whom why will with
would you your yours yourself yourselves s t d ll m re ve don didn doesn isn wasn im
""".split())

DEFAULTS = {
    "k1": 3.0,
    "b": 0.5,
    "query_turns": 5,
    "doc_context_turns": 0,
    "doc_response": True,
    "doc_after_turns": 8,
    "name_weight": 16,
    "kg_weight": 2,
    "stopwords": True,
}


def tokenize(text: str, stopwords: bool = True) -> list[str]:
    tokens = TOKEN.findall(text.lower())
    return [t for t in tokens if t not in STOPWORDS] if stopwords else tokens


def last_turns(turns: list[str], n: int) -> list[str]:
    """The last ``n`` turns (all of them when ``n`` is 0)."""
    return list(turns[-n:]) if n else list(turns)


def transcripts(samples) -> dict[str, list[str]]:
    """dialog id -> its turns as far as the samples show them: the longest context plus that
    sample's response. A sample's own turn is then at index ``len(sample["context"])`` (the
    contexts of one dialogue's samples are prefixes of each other)."""
    last: dict[str, dict] = {}
    for sample in samples:
        seen = last.get(sample["dialog_id"])
        if seen is None or len(sample["context"]) > len(seen["context"]):
            last[sample["dialog_id"]] = sample
    return {d: [*sample["context"], sample.get("response") or ""] for d, sample in last.items()}


def check_config(config: dict) -> dict:
    """The settings, checked: a wrong value ends the run with one ``Error:`` line."""
    def number(key, low=0.0, high=None):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= (high or np.inf):
            span = f"between {low} and {high}" if high is not None else f"a number >= {low}"
            raise UserError(f"bm25: {key} must be {span}, got {value!r}")
        return float(value)

    def count(key):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"bm25: {key} must be a whole number >= 0, got {value!r}")
        return value

    def flag(key):
        if not isinstance(config[key], bool):
            raise UserError(f"bm25: {key} must be true or false, got {config[key]!r}")
        return config[key]

    return {"k1": number("k1"), "b": number("b", 0.0, 1.0), "query_turns": count("query_turns"),
            "doc_context_turns": count("doc_context_turns"), "doc_response": flag("doc_response"),
            "doc_after_turns": count("doc_after_turns"),
            "name_weight": count("name_weight"), "kg_weight": count("kg_weight"), "stopwords": flag("stopwords")}


class BM25Index:
    """Okapi BM25 over a fixed set of documents given as term counts.

    ``counts`` is a scipy sparse matrix (documents x vocabulary) of term frequencies. The
    per-(document, term) weights are computed once; scoring a batch of queries is one sparse
    product.
    """

    def __init__(self, counts, k1: float = 1.2, b: float = 0.75):
        import scipy.sparse as sp

        counts = sp.csr_matrix(counts, dtype=np.float64)
        n_docs = counts.shape[0]
        doc_len = np.asarray(counts.sum(axis=1)).ravel()
        avgdl = doc_len.mean() if n_docs and doc_len.mean() > 0 else 1.0
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        self.idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        tf = counts.data
        norm = np.repeat(k1 * (1.0 - b + b * doc_len / avgdl), np.diff(counts.indptr))
        weights = counts.copy()
        weights.data = self.idf[counts.indices] * tf * (k1 + 1.0) / (tf + norm)
        self.weights_t = weights.T.tocsr()  # vocabulary x documents
        self.doc_len, self.avgdl = doc_len, avgdl

    def scores(self, queries) -> np.ndarray:
        """``queries``: sparse (queries x vocabulary) term counts -> dense (queries x documents)."""
        return np.asarray((queries @ self.weights_t).todense())


class BM25Model(PopularityModel):
    name = "bm25"
    version = "1.0"
    description = ("Okapi BM25 of the dialogue context against per-item documents from the training "
                   "dialogues (title, contexts that led to the item, graph neighbours); recommends only.")
    profiles = {"default": dict(DEFAULTS)}

    def fit(self, data) -> None:
        import scipy.sparse as sp

        self.settings = s = check_config(self.config)
        super().fit(data)  # popularity order: the tie-break
        self.items = np.asarray(sorted(data.items), dtype=np.int64)
        row_of = {int(item): i for i, item in enumerate(self.items)}
        self.vocab: dict[str, int] = {}
        rows, cols, vals = [], [], []

        def add(row: int, tokens, weight: int = 1) -> None:
            for token, n in Counter(tokens).items():
                rows.append(row)
                cols.append(self.vocab.setdefault(token, len(self.vocab)))
                vals.append(n * weight)

        cache: dict[str, list[str]] = {}  # a turn recurs in the context of every later sample

        def tokens_of(texts) -> list[str]:
            out = []
            for text in texts:
                if text not in cache:
                    cache[text] = tokenize(text, s["stopwords"])
                out.extend(cache[text])
            return out

        train = list(data.splits["train"])
        dialogues = transcripts(train) if s["doc_after_turns"] else {}
        placeholder = getattr(data, "item_placeholder", None)  # not a word of the dialogue
        n_used = 0
        for sample in train:
            targets = [row_of[t] for t in dict.fromkeys(sample["targets"]) if t in row_of]
            if not targets:
                continue
            n_used += 1
            texts = last_turns(sample["context"], s["doc_context_turns"])
            if s["doc_response"]:
                template = sample.get("response_template") or ""
                texts.append(template.replace(placeholder, " ") if placeholder else template)
            if s["doc_after_turns"]:
                start = len(sample["context"]) + 1
                texts.extend(dialogues[sample["dialog_id"]][start:start + s["doc_after_turns"]])
            tokens = tokens_of(texts)
            for row in targets:
                add(row, tokens)
        if s["name_weight"]:
            for item, row in row_of.items():
                add(row, tokenize(str(data.item_names.get(item, "")), s["stopwords"]), s["name_weight"])
        n_edges = 0
        if s["kg_weight"] and getattr(data, "kg", None) is not None:
            n_edges = self._add_graph(data.kg, row_of, add, s)
        counts = sp.coo_matrix((np.asarray(vals, dtype=np.float64), (rows, cols)),
                               shape=(len(self.items), len(self.vocab))).tocsr()
        counts.sum_duplicates()
        self.counts = counts  # items (rows, in self.items order) x vocabulary: the documents
        self.index = BM25Index(counts, s["k1"], s["b"])
        # Ties (no shared word) fall back to popularity: columns in popularity order, stable sort.
        pop_pos = {item: i for i, item in enumerate(self.ranking)}
        self.by_popularity = np.argsort([pop_pos[int(item)] for item in self.items], kind="stable")
        self.items_by_popularity = self.items[self.by_popularity]
        self.summary = {"train_samples": len(train), "train_samples_with_targets": n_used, "graph_edges": n_edges,
                        "vocabulary": len(self.vocab), "items_with_text": int((self.index.doc_len > 0).sum()),
                        "mean_document_tokens": round(float(self.index.avgdl), 1)}
        self.context.logger.info("bm25: %s", self.summary)

    @staticmethod
    def _add_graph(kg, row_of, add, s) -> int:
        triples = np.asarray(kg.triples, dtype=np.int64).reshape(-1, 3)
        names: dict[int, list[str]] = {}
        n = 0
        for head, _relation, tail in triples.tolist():
            for item, other in ((head, tail), (tail, head)):
                if item in row_of and other != item:
                    if other not in names:
                        names[other] = tokenize(str(kg.entity_name(other)), s["stopwords"])
                    add(row_of[item], names[other], s["kg_weight"])
                    n += 1
        return n

    def query_matrix(self, batch):
        import scipy.sparse as sp

        rows, cols, vals = [], [], []
        for i, sample in enumerate(batch):
            text = " ".join(last_turns(sample["context"], self.settings["query_turns"]))
            for token, n in Counter(tokenize(text, self.settings["stopwords"])).items():
                col = self.vocab.get(token)
                if col is not None:
                    rows.append(i)
                    cols.append(col)
                    vals.append(float(n))
        return sp.csr_matrix((vals, (rows, cols)), shape=(len(batch), len(self.vocab)))

    def score(self, batch) -> np.ndarray:
        """BM25 score of every item (columns in ``self.items`` order) for each sample."""
        return self.index.scores(self.query_matrix(batch))

    def recommend(self, batch):
        scores = self.score(batch)[:, self.by_popularity]
        order = np.argsort(-scores, axis=1, kind="stable")
        return self.items_by_popularity[order].tolist()

    def result_extra(self) -> dict:
        return {"bm25": {"settings": self.settings, **self.summary}}
