"""The opt-in int8 encoder: SmoothQuant, then torch's dynamic int8 Linear layers.

torch's dynamic int8 Linear quantizes a layer's input with one scale per call. A few input
channels of BERT-style models run far larger than the rest, so that one scale leaves the others
only a handful of levels: plain dynamic quantization kept recall@10 against fp32 at 0.84. Two
changes, chosen by bench/embeddings.py (generated sentences and stdlib docstrings, same run):

- SmoothQuant (Xiao et al., 2023): per input channel j, the activation is divided by s_j and the
  weight column multiplied by it (the product is unchanged), with
  s_j = max|x_j|^ALPHA / max|w_j|^(1 - ALPHA) from activation ranges measured at load on
  calibration sentences. The large channels shrink; the weights, quantized per output
  channel, absorb them.
- 8-bit activations. torch asks fbgemm for 7 bits (reduce_range) because, without VNNI, u8 x s8
  products are summed pairwise in int16 and can saturate. With AVX512-VNNI the sums are int32 and
  all 8 bits are used; without it the weights take 7 bits instead (|w| <= 64 cannot saturate).
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

ALPHA = 0.8  # how much of an activation channel's range moves into the weights (0.5, 0.7, 0.8, 0.9 measured)
CALIBRATION_SENTENCES = 256
# Calibration text: English prose that is on every machine, offline. The ranges it measures are the
# model's own outlier channels, not the subject's. bench/embeddings.py scores recall on other texts.
CALIBRATION_MODULES = ("email.message", "logging", "argparse", "decimal", "http.client", "threading",
                       "tarfile", "sqlite3", "unittest.case", "zipfile")


class Smoothed(torch.nn.Module):
    """x / s into a Linear whose weight columns were multiplied by s: the same product, a flatter x."""

    inverse: torch.Tensor

    def __init__(self, linear: torch.nn.Linear, input_range: torch.Tensor) -> None:
        super().__init__()
        weight = linear.weight.detach()
        scale = input_range.clamp(min=1e-5) ** ALPHA / weight.abs().amax(0).clamp(min=1e-5) ** (1 - ALPHA)
        linear.weight.data = weight * scale
        self.register_buffer("inverse", 1.0 / scale)
        self.linear = linear

    def forward(self, x: torch.Tensor) -> Any:
        return self.linear(x * self.inverse)


class Int8Linear(DynamicInt8Linear):
    """torch's dynamic int8 Linear with 8-bit inputs (it asks for 7); quantize() keeps them from saturating."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False)
        return y.to(x.dtype)


def quantize(model: Any) -> Any:
    """A sentence-transformers model with its Linear layers smoothed and quantized to int8 (in place)."""
    _smooth(model, _input_ranges(model, list(calibration_sentences())))
    weight_bits = {} if cpu_has_vnni() else {"quant_min": -64, "quant_max": 63}
    weights = torch.ao.quantization.PerChannelMinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, **weight_bits)
    qconfig = torch.ao.quantization.QConfig(activation=torch.ao.quantization.default_dynamic_quant_observer,
                                            weight=weights)
    with warnings.catch_warnings():  # torch.ao's eager API is deprecated for torchao, still the CPU fast path
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8,
                                                      mapping={torch.nn.Linear: Int8Linear}, inplace=True)


@cache
def calibration_sentences() -> tuple[str, ...]:
    """The calibration text: the same on every run of this Python."""
    return tuple(docstring_sentences(CALIBRATION_MODULES)[:CALIBRATION_SENTENCES])


def docstring_sentences(modules: Sequence[str]) -> list[str]:
    """The distinct sentences of 30 to 200 characters in the docstrings of these modules' members, in order."""
    found: dict[str, None] = {}
    for name in modules:
        for _, member in inspect.getmembers(importlib.import_module(name)):
            for sentence in re.split(r"(?<=[.!?])\s+", (inspect.getdoc(member) or "").replace("\n", " ")):
                if 30 <= len(sentence) <= 200:
                    found.setdefault(sentence)
    return list(found)


@cache
def cpu_has_vnni() -> bool:
    """Whether fbgemm sums u8 x s8 products in int32 here (AVX512-VNNI): then 8-bit weights cannot saturate."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and "avx512_vnni" in line.split() for line in cpuinfo.splitlines())


def _input_ranges(model: Any, texts: list[str]) -> dict[str, torch.Tensor]:
    """Per Linear layer, the largest absolute input of each channel over the calibration texts."""
    ranges: dict[str, torch.Tensor] = {}

    def observe(name: str) -> Any:
        def hook(_module: Any, args: tuple[torch.Tensor, ...]) -> None:
            seen = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0)
            ranges[name] = torch.maximum(ranges[name], seen) if name in ranges else seen
        return hook

    hooks = [module.register_forward_pre_hook(observe(name)) for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear)]
    try:
        model.encode(texts, batch_size=64, show_progress_bar=False)
    finally:
        for hook in hooks:
            hook.remove()
    return ranges


def _smooth(model: Any, ranges: dict[str, torch.Tensor]) -> None:
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, torch.nn.Linear) and name in ranges:
                setattr(parent, child_name, Smoothed(child, ranges[name]))
