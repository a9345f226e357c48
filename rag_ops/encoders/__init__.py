"""Encode backends: what turns texts into vectors, chosen by the ``embed_backend`` setting.

- ``torch``: the sentence-transformers model in fp32, the reference.
- ``torch-bf16``: the same model under ``torch.autocast(bfloat16)`` on the CPU.
- ``onnx`` / ``onnx-int8``: the model exported to ONNX once, offline, from its local folder by
  PyTorch's own exporter (``torch.onnx``), int8 by ONNX Runtime's dynamic quantisation
  (per-channel weights), then run by ONNX Runtime with the model's ``tokenizer.json``. A process
  that finds the export in place imports neither torch nor transformers.
- ``openvino`` / ``openvino-bf16``: that same fp32 export compiled by OpenVINO's CPU plugin, in
  fp32 or with bf16 inference precision (its AMX kernels where the CPU has them).

sentence-transformers' own ONNX/OpenVINO backends go through Optimum, whose releases require
transformers < 4.58 (optimum-onnx) or < 5.6 (optimum-intel), older than the pinned one, so the
export uses the two libraries Optimum itself calls.

Vectors of two backends differ slightly: the backend is part of the model identity
(:func:`model_id_suffix`), so caches and index versions never mix them.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from rag_ops.encoders.backends import (
    BACKENDS,
    EMBED_BACKENDS,
    Encoder,
    auto_backend,
    cpu_flags,
    model_id_suffix,
    resolve_backend,
)
from rag_ops.encoders.export import ONNX_OPSET, onnx_model
from rag_ops.encoders.exported import OnnxEncoder, OpenVinoEncoder, model_dimension
from rag_ops.encoders.torch_backend import TorchEncoder, sentence_transformer
from rag_ops.errors import EmbeddingError

__all__ = [
    "BACKENDS", "EMBED_BACKENDS", "ONNX_OPSET", "Encoder", "OnnxEncoder", "OpenVinoEncoder", "TorchEncoder",
    "auto_backend", "cpu_flags", "load_encoder", "model_dimension", "model_id_suffix", "onnx_model",
    "resolve_backend", "sentence_transformer",
]

log = logging.getLogger(__name__)

_ENCODERS: dict[tuple, Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def load_encoder(model_path: str, backend: str, cache_dir: Path, threads: int = 0) -> Encoder:
    """The encoder of ``model_path`` for ``backend``, loaded (and exported) once per process.

    Raises:
        EmbeddingError: the path holds no loadable model, or the export failed.
    """
    key = (model_path, backend, str(cache_dir), threads)
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            t0 = time.perf_counter()
            try:
                if backend.startswith("onnx"):
                    encoder: Encoder = OnnxEncoder(model_path, onnx_model(model_path, backend, cache_dir), threads)
                elif backend.startswith("openvino"):
                    onnx_path = onnx_model(model_path, "onnx", cache_dir)
                    encoder = OpenVinoEncoder(model_path, onnx_path, backend == "openvino-bf16", threads)
                else:
                    encoder = TorchEncoder(model_path, backend == "torch-bf16", threads)
            except EmbeddingError:
                raise
            except Exception as exc:
                raise EmbeddingError(
                    f"cannot load the embedding model from {model_path!r} ({backend}): {type(exc).__name__}: {exc}"
                ) from exc
            _ENCODERS[key] = encoder
            log.info("loaded embedding model from %s (%s) in %.1fs", model_path, backend, time.perf_counter() - t0)
        return _ENCODERS[key]
