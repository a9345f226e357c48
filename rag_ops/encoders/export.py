"""The model exported to ONNX once, offline, from its local folder (int8 by quantising that)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from rag_ops.encoders.torch_backend import sentence_transformer
from rag_ops.errors import EmbeddingError

log = logging.getLogger(__name__)

ONNX_OPSET = 17


@contextlib.contextmanager
def written_whole(dest: Path) -> Iterator[Path]:
    """A path beside ``dest`` to write to: it becomes ``dest`` when the block ends without an
    error and is removed otherwise, so a reader never sees a part-written file and processes
    writing at once each end with a whole one."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)

_EXPORT_LOCK = threading.Lock()


def onnx_model(model_path: str, backend: str, cache_dir: Path) -> Path:
    """The ONNX file of ``model_path`` for ``backend`` (``onnx`` or ``onnx-int8``), exported on
    first use into ``cache_dir/<model>-<files hash>/`` (never downloaded; written whole or not at
    all, so processes exporting at once both end with a good file)."""
    from rag_ops.versions import model_files_hash

    root = Path(model_path)
    folder = cache_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', root.name)[:60]}-{model_files_hash(model_path)[:16]}"
    fp32 = folder / "model.onnx"
    target = fp32 if backend == "onnx" else folder / "model-int8.onnx"
    with _EXPORT_LOCK:
        if not target.is_file():
            _in_child_process(model_path, backend, target)
    return target


def _in_child_process(model_path: str, backend: str, target: Path) -> None:
    """Export (and quantise) in a process of its own: the export imports torch and holds the model
    twice (about 0.8 GB more at its peak), none of which the encoding process needs afterwards."""
    import subprocess

    t0 = time.perf_counter()
    code = "import sys; from rag_ops.encoders.export import _materialize; _materialize(sys.argv[1], sys.argv[2], sys.argv[3])"
    out = subprocess.run([sys.executable, "-c", code, model_path, backend, str(target)], capture_output=True, text=True)
    if out.returncode != 0 or not target.is_file():
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise EmbeddingError(f"exporting {model_path!r} to ONNX ({backend}) failed: {tail}")
    log.info("exported the embedding model to ONNX (%s) in %.1fs", target, time.perf_counter() - t0)


def _materialize(model_path: str, backend: str, target: str) -> None:
    """The child's work: the fp32 export if missing, then the int8 model when asked for."""
    target_path = Path(target)
    fp32 = target_path.with_name("model.onnx")
    if not fp32.is_file():
        _export(model_path, fp32)
    if backend == "onnx-int8" and not target_path.is_file():
        _quantize(fp32, target_path)


def _export(model_path: str, dest: Path) -> None:
    import warnings

    import torch

    dest.parent.mkdir(parents=True, exist_ok=True)
    model = sentence_transformer(model_path).eval()
    prepare = getattr(model, "preprocess", None) or model.tokenize  # renamed in sentence-transformers 6
    sample = prepare(["an example sentence", "a second, somewhat longer example sentence"])
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]

    class Sentences(torch.nn.Module):  # the whole pipeline (transformer, pooling, dense...) in one graph
        def __init__(self, st):
            super().__init__()
            self.st = st

        def forward(self, *tensors):
            return self.st(dict(zip(names, tensors)))["sentence_embedding"]

    try:
        with written_whole(dest) as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on shape checks that hold for any input
            torch.onnx.export(
                Sentences(model), tuple(sample[k] for k in names), str(tmp),
                input_names=names, output_names=["sentence_embedding"],
                dynamic_axes={**{k: {0: "batch", 1: "tokens"} for k in names}, "sentence_embedding": {0: "batch"}},
                opset_version=ONNX_OPSET, dynamo=False,
            )
    except Exception as exc:
        raise EmbeddingError(f"exporting {model_path!r} to ONNX failed: {type(exc).__name__}: {exc}") from exc


def _quantize(source: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ort_logger = logging.getLogger()  # onnxruntime.quantization warns through the root logger
    level = ort_logger.level
    try:
        ort_logger.setLevel(max(level, logging.ERROR))
        with written_whole(dest) as tmp:
            # per-channel weights: per-tensor int8 moved some vectors to cos 0.90 of fp32's; this 0.99
            quantize_dynamic(source, tmp, weight_type=QuantType.QInt8, per_channel=True)
    except Exception as exc:
        raise EmbeddingError(f"quantising {source} to int8 failed: {type(exc).__name__}: {exc}") from exc
    finally:
        ort_logger.setLevel(level)

