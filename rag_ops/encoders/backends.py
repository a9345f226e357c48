"""The encode backends, their identity and the choice ``auto`` makes on this CPU."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from rag_ops.errors import ConfigError

BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8", "openvino", "openvino-bf16")
EMBED_BACKENDS = ("auto", *BACKENDS)


class Encoder(Protocol):
    dimension: int

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, in order."""


def model_id_suffix(backend: str) -> str:
    """What a backend adds to the model id: nothing for the fp32 reference (the id caches and
    versions built before backends existed carry)."""
    return "" if backend == "torch" else f"+{backend}"


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    found = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return frozenset(found.group(1).split()) if found else frozenset()


def auto_backend(flags: frozenset[str] | None = None) -> str:
    """The backend ``auto`` means on a CPU with these flags (this machine's by default).

    Chosen by ``bench/encode_bench.py`` (docs/benchmarks.md#encode-backends). On a Xeon with AMX,
    OpenVINO in bf16 encoded ~2.5x faster than fp32 at equal quality while ONNX Runtime's int8
    was no faster than fp32 there. On an AMD CPU with AVX-512 VNNI and bf16 (no AMX): int8 ONNX stayed within 0.5 point of fp32's nDCG@10 and recall@100 on
    SciFact and Cranfield in both stores, encoded fastest or close to it (torch bf16 was ahead
    in one of two runs, 2.34x against 2.20x, and far behind under load), loads in half a second
    instead of six and takes half the memory. int8 kernels need VNNI to be fast; without it,
    on x86-64 with AVX2, ONNX fp32 gives the reference's vectors faster. Elsewhere (ARM, older
    x86) nothing was measured, so the fp32 reference stays.
    """
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return "openvino-bf16"
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "onnx-int8"
    return "onnx" if "avx2" in flags else "torch"


def resolve_backend(embed_backend: str, embed_precision: str = "fp32") -> str:
    """A concrete backend for the settings (``auto`` resolved; ``embed_precision=bf16`` is the
    older spelling of ``torch-bf16``)."""
    if embed_backend not in EMBED_BACKENDS:
        raise ConfigError(f"embed_backend must be one of {list(EMBED_BACKENDS)}. Got {embed_backend!r}.")
    if embed_precision == "bf16" and embed_backend in ("auto", "torch"):
        return "torch-bf16"
    return auto_backend() if embed_backend == "auto" else embed_backend

