"""Derive a second embedding model offline from a local one (no hub): for trying a model change.

Two derivations, both real sentence-transformers models saved to a folder that the
``embedding_model`` setting can name:

* ``dimension=N``: the same encoder followed by a fixed random projection to N dimensions
  (seeded Gaussian matrix scaled by 1/sqrt(N), Johnson-Lindenstrauss: cosine similarities are
  roughly kept) and re-normalisation. A model change with a new vector size.
* ``max_seq_length=N``: the same weights reading only the first N tokens of a text. A
  deliberately weaker model (for the re-index recall gate).

    python -m rag_ops.models DEST [--from PATH] [--dimension 128] [--max-seq-length 16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def derive_model(src: str | Path, dest: str | Path, *, dimension: int | None = None, max_seq_length: int | None = None, seed: int = 0) -> Path:
    """Write a derived model to ``dest`` (replaced if present) and return its path."""
    src, dest = Path(src), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    if dimension is None:
        shutil.copytree(src, dest)
    else:
        import numpy as np
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.models import Dense, Normalize

        base = SentenceTransformer(str(src), device="cpu", local_files_only=True)
        width = (getattr(base, "get_embedding_dimension", None) or base.get_sentence_embedding_dimension)()
        weight = np.random.default_rng(seed).standard_normal((dimension, width)) / np.sqrt(dimension)
        dense = Dense(width, dimension, bias=False, activation_function=torch.nn.Identity())
        with torch.no_grad():
            dense.linear.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        modules = [m for m in base if not isinstance(m, Normalize)] + [dense, Normalize()]
        SentenceTransformer(modules=modules, device="cpu").save(str(dest))
    if max_seq_length is not None:
        cfg_path = dest / "sentence_bert_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        cfg["max_seq_length"] = int(max_seq_length)
        cfg_path.write_text(json.dumps(cfg, indent=2))
    return dest


def main(argv: list[str] | None = None) -> int:
    from rag_ops.config import Settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dest")
    ap.add_argument("--from", dest="src", default=None, help="source model folder (default: the configured model)")
    ap.add_argument("--dimension", type=int, default=None)
    ap.add_argument("--max-seq-length", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    src = args.src or Settings.from_env().model_path
    out = derive_model(src, args.dest, dimension=args.dimension, max_seq_length=args.max_seq_length, seed=args.seed)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
