"""The reference: the sentence-transformers model on torch, in fp32 or under bf16 autocast."""

from __future__ import annotations

import numpy as np

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

