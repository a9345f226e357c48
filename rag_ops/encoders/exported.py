"""The model's ONNX export run by ONNX Runtime or compiled by OpenVINO, fed by its own tokenizer."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag_ops.encoders.backends import cpu_flags
from rag_ops.encoders.export import written_whole
from rag_ops.errors import EmbeddingError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

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
        self.tokenizer = _tokenizer(model_path, OPENVINO_PAD_MULTIPLE)
        self.dimension = int(compiled.outputs[0].get_partial_shape()[-1].get_length())

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        # a run's last batches have any number of rows: a power of two bounds the shapes too
        rows = len(feed["input_ids"])
        fill = (1 << (rows - 1).bit_length()) - rows
        if fill:
            feed = {k: np.concatenate([v, np.repeat(v[:1], fill, axis=0)]) for k, v in feed.items()}
        return self.request.infer(feed)[0][:rows]


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
    try:
        with written_whole(blob) as tmp, open(tmp, "wb") as out:
            out.write(compiled.export_model().getbuffer())
    except Exception as exc:  # noqa: BLE001 - a read-only cache, a full disk: every process compiles
        log.debug("could not keep the compiled OpenVINO model at %s: %s", blob, exc)
    return compiled, None


# OpenVINO's CPU plugin keeps compiled kernels for every input shape it has seen, so a long run's
# memory grew with its distinct text lengths and batch sizes; lengths padded to a multiple of this
# (masked out of the pooled vector) and rows to a power of two bound them (docs/benchmarks.md#memory)
OPENVINO_PAD_MULTIPLE = 32


def _tokenizer(model_path: str, pad_to_multiple_of: int | None = None):
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
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token, pad_to_multiple_of=pad_to_multiple_of)
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


