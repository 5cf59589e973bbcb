"""The opt-in int8 encoder: its vectors stay close to fp32's and rank alike; its int8 sums cannot saturate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from timber_tasks.embeddings import int8
from timber_tasks.embeddings.encoder import DEFAULT_MODEL, Encoder, get_encoder, resolve_model_path

SUBJECTS = ["The chipmaker", "The airline", "The bank", "The utility", "The retailer", "The miner", "The insurer",
            "The carmaker", "The drug maker", "The telecom"]
EVENTS = ["reported record revenue", "cut its dividend", "raised its guidance", "missed earnings estimates",
          "announced layoffs", "opened a new factory", "faced a lawsuit", "bought back shares",
          "signed a merger deal", "lost market share"]
TEXTS = [f"{s} {e} this quarter." for s in SUBJECTS for e in EVENTS]  # 100 sentences, many near neighbours


@pytest.fixture(scope="module")
def fp32_vectors() -> Any:
    return get_encoder(DEFAULT_MODEL).encode(TEXTS)


def _int8_encoder() -> Encoder:
    return Encoder(DEFAULT_MODEL, resolve_model_path(DEFAULT_MODEL), int8=True)


def _recall_at_10(a: Any, b: Any) -> float:
    return float(np.mean([len(set(np.argsort(-(a @ a[q]))[1:11]) & set(np.argsort(-(b @ b[q]))[1:11])) / 10
                          for q in range(len(a))]))


def test_int8_vectors_are_close_to_fp32_and_find_the_same_neighbours(fp32_vectors: Any) -> None:
    encoder = _int8_encoder()
    vectors = encoder.encode(TEXTS)
    assert encoder.key == f"{DEFAULT_MODEL}#int8-smooth"  # stored vectors of another int8 method are re-embedded
    assert vectors.shape == fp32_vectors.shape
    assert float((vectors * fp32_vectors).sum(axis=1).min()) > 0.98
    assert _recall_at_10(fp32_vectors, vectors) >= 0.9
    layers = [m for m in encoder.model.modules() if isinstance(m, int8.Int8Linear)]
    assert len(layers) == sum(isinstance(m, int8.Smoothed) for m in encoder.model.modules()) > 0
    assert not any(type(m) is torch.nn.Linear for m in encoder.model.modules())  # every Linear is int8


def test_without_vnni_the_weights_take_7_bits_so_8_bit_inputs_cannot_saturate(
        monkeypatch: pytest.MonkeyPatch, fp32_vectors: Any) -> None:
    monkeypatch.setattr(int8, "cpu_has_vnni", lambda: False)
    encoder = _int8_encoder()
    vectors = encoder.encode(TEXTS)
    for layer in (m for m in encoder.model.modules() if isinstance(m, int8.Int8Linear)):
        weights = layer.weight().int_repr()
        assert int(weights.min()) >= -64 and int(weights.max()) <= 63
    assert float((vectors * fp32_vectors).sum(axis=1).min()) > 0.97


def test_calibration_text_is_fixed_offline_prose() -> None:
    sentences = int8.calibration_sentences()
    assert len(sentences) == int8.CALIBRATION_SENTENCES
    assert all(30 <= len(s) <= 200 for s in sentences)
    assert len(set(sentences)) == len(sentences)
