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

import json
import logging
import os
import re
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rag_ops.errors import ConfigError, EmbeddingError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8", "openvino", "openvino-bf16")
EMBED_BACKENDS = ("auto", *BACKENDS)
ONNX_OPSET = 17


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


# ---------------------------------------------------------------------------------------- torch
def sentence_transformer(model_path: str):
    """A new torch SentenceTransformer from the local folder, offline, on the CPU."""
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()
    return SentenceTransformer(model_path, device="cpu", local_files_only=True)


class TorchEncoder:
    def __init__(self, model_path: str, bf16: bool, threads: int):
        self.model = sentence_transformer(model_path)
        self.bf16 = bf16
        self.threads = threads
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimension = int(getter())

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        import contextlib

        import torch

        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            vectors = self.model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return np.asarray(vectors, dtype=np.float32)


# ----------------------------------------------------------------------------------------- onnx
class _ExportedEncoder:
    """The exported graph (pooling included) fed by the model's own tokenizer; subclasses run it."""

    inputs: list[str]
    dimension: int
    tokenizer: "Tokenizer"

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # longest first, as sentence-transformers does: batches of like lengths pad least
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in rows])
            feed = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            vectors = self.run({k: feed[k] for k in self.inputs})
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            out[rows] = vectors / np.maximum(norms, 1e-12)
        return out


class OnnxEncoder(_ExportedEncoder):
    """An exported sentence-transformers model run by ONNX Runtime."""

    def __init__(self, model_path: str, onnx_path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # idle threads sleep instead of spinning: spinning threads took the cores from every other
        # process (Airflow's parallel tasks, a parser helper) and halved throughput under load
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3  # its warnings go to stderr, not through logging
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = _tokenizer(model_path)
        self.dimension = int(self.session.get_outputs()[0].shape[-1])

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feed)[0]


class OpenVinoEncoder(_ExportedEncoder):
    """The fp32 ONNX export compiled by OpenVINO's CPU plugin, in fp32 or bf16 precision."""

    def __init__(self, model_path: str, onnx_path: Path, bf16: bool, threads: int):
        # `import openvino` sends a Google Analytics event when openvino-telemetry is importable
        # (its model-conversion tools report every import); blocked, OpenVINO uses its own stub
        sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
        import openvino

        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled, self._blob = _openvino_compiled(openvino, onnx_path, config)
        self.request = compiled.create_infer_request()
        self.inputs = [port.get_any_name() for port in compiled.inputs]
        self.tokenizer = _tokenizer(model_path)
        self.dimension = int(compiled.outputs[0].get_partial_shape()[-1].get_length())

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.request.infer(feed)[0]


def _openvino_compiled(openvino, onnx_path: Path, config: dict):
    """The export compiled for this CPU and ``config``, and the mapped file it came from (the
    compiled model may point into it: it lives as long as the encoder).

    Compiling took 0.2-0.6 s a process here, importing the compiled model 0.05 s: the first
    process keeps it beside the export (written whole or not at all), named by everything the
    compiled code depends on (OpenVINO's version, the config, the CPU's flags), and later ones
    import it. A file that does not import (truncated, another build) is compiled again."""
    import hashlib

    key = json.dumps([openvino.get_version(), sorted(config.items()), sorted(cpu_flags())])
    blob = onnx_path.with_name(f"openvino-{hashlib.sha256(key.encode()).hexdigest()[:16]}.blob")
    core = openvino.Core()
    if blob.is_file():
        try:
            mapped = openvino.Tensor(np.memmap(blob, dtype=np.uint8, mode="c"), shared_memory=True)
            return core.import_model(mapped, "CPU", config), mapped
        except Exception as exc:  # noqa: BLE001 - recompiled below
            log.warning("the compiled OpenVINO model %s did not load (%s); compiling the export again",
                        blob, " ".join(str(exc).split())[:200])
    compiled = core.compile_model(str(onnx_path), "CPU", config)
    tmp = blob.with_name(f".{blob.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(compiled.export_model().getbuffer())
        os.replace(tmp, blob)
    except Exception as exc:  # noqa: BLE001 - a read-only cache, a full disk: every process compiles
        log.debug("could not keep the compiled OpenVINO model at %s: %s", blob, exc)
    finally:
        tmp.unlink(missing_ok=True)
    return compiled, None


def _tokenizer(model_path: str):
    """The model's fast tokenizer from ``tokenizer.json``: truncated to the model's
    ``max_seq_length`` and padded per batch, as sentence-transformers tokenizes."""
    from tokenizers import Tokenizer

    root = Path(model_path)
    if not (root / "tokenizer.json").is_file():
        raise EmbeddingError(f"the ONNX and OpenVINO backends need the model's tokenizer.json; {model_path!r} has none (use embed_backend torch)")
    tok = Tokenizer.from_file(str(root / "tokenizer.json"))
    tok.enable_truncation(max_length=_max_seq_length(root))
    pad_id, pad_token = 0, "[PAD]"
    try:
        config = json.loads((root / "tokenizer_config.json").read_text())
        pad_token = config.get("pad_token") or pad_token
        pad_token = pad_token["content"] if isinstance(pad_token, dict) else pad_token
        pad_id = tok.token_to_id(pad_token) or 0
    except (OSError, ValueError):
        pass
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tok


def model_dimension(model_path: str) -> int | None:
    """The embedding size a sentence-transformers model folder declares, without loading it.

    Reads the last Dense layer's ``out_features`` if there is one, else the pooling layer's
    ``word_embedding_dimension``; None when the folder does not say.
    """
    root = Path(model_path)
    try:
        modules = json.loads((root / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    dim = None
    for module in modules:
        cfg = root / module.get("path", "") / "config.json"
        if not cfg.is_file():
            continue
        conf = json.loads(cfg.read_text())
        if "Dense" in module.get("type", "") and "out_features" in conf:
            dim = int(conf["out_features"])
        elif "Pooling" in module.get("type", "") and "word_embedding_dimension" in conf:
            dim = int(conf["word_embedding_dimension"])
    return dim


def _max_seq_length(root: Path) -> int:
    for name in ("sentence_bert_config.json", "tokenizer_config.json", "config.json"):
        try:
            conf = json.loads((root / name).read_text())
        except (OSError, ValueError):
            continue
        for key in ("max_seq_length", "model_max_length", "max_position_embeddings"):
            if isinstance(conf.get(key), int) and 0 < conf[key] <= 100_000:
                return conf[key]
    return 512


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
    code = "import sys; from rag_ops.encoders import _materialize; _materialize(sys.argv[1], sys.argv[2], sys.argv[3])"
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

    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on shape checks that hold for any input
            torch.onnx.export(
                Sentences(model), tuple(sample[k] for k in names), str(tmp),
                input_names=names, output_names=["sentence_embedding"],
                dynamic_axes={**{k: {0: "batch", 1: "tokens"} for k in names}, "sentence_embedding": {0: "batch"}},
                opset_version=ONNX_OPSET, dynamo=False,
            )
        os.replace(tmp, dest)
    except Exception as exc:
        raise EmbeddingError(f"exporting {model_path!r} to ONNX failed: {type(exc).__name__}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _quantize(source: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    ort_logger = logging.getLogger()  # onnxruntime.quantization warns through the root logger
    level = ort_logger.level
    try:
        ort_logger.setLevel(max(level, logging.ERROR))
        # per-channel weights: per-tensor int8 moved some vectors to cos 0.90 of fp32's; this 0.99
        quantize_dynamic(source, tmp, weight_type=QuantType.QInt8, per_channel=True)
        os.replace(tmp, dest)
    except Exception as exc:
        raise EmbeddingError(f"quantising {source} to int8 failed: {type(exc).__name__}: {exc}") from exc
    finally:
        ort_logger.setLevel(level)
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- loading
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
