"""Index versions (blue/green): which physical collection serves an index, and the swap.

An *index* is the logical collection (setting ``collection``, e.g. ``ragops``). Each build of it
in a store is a *version* with its own physical collection ``<index>__v<N>``, recorded in the
catalog's ``index_versions`` table with the model and chunker settings it was built with.
Exactly one version per (index, store) is ``live``:

* **Chroma** has no aliases: the live row *is* the pointer. Every reader in ragops resolves it
  (:func:`live_collection`); an outside reader reads it from the catalog (``ragops versions
  --json``) or uses :mod:`rag_ops.langchain`.
* **Milvus** also gets an alias named after the index, pointing at the live version's collection;
  the swap is ``alter_alias``, atomic for every reader that queries through the alias.

Ingest writes to the live versions with the model and chunker they were built with (not
whatever the settings say now: a changed model is *config drift* and needs a re-index,
:mod:`rag_ops.reindex`). The first ingest of an index registers version 1.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from rag_ops.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from rag_ops.catalog import Catalog
    from rag_ops.config import Settings

log = logging.getLogger(__name__)

# what a version fixes about how text becomes vectors; ingest into a version uses its values
BUILD_FIELDS = ("embedding_model", "embed_backend", "chunk_size", "chunk_overlap")


def physical_name(index_name: str, version: int) -> str:
    """The physical collection of one version (valid in Chroma and Milvus)."""
    return f"{index_name}__v{version}"


_HASHES: dict[tuple, str] = {}
_HASH_LOCK = threading.Lock()


def model_files_hash(model_path: str) -> str:
    """SHA-256 over a model folder's files (relative names and bytes), cached per (path, stat).

    Identifies the weights and settings a model id alone does not: the same path with other
    files is another model.
    """
    root = Path(model_path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    key = (str(root.resolve()), tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    digest = h.hexdigest()
    with _HASH_LOCK:
        _HASHES[key] = digest
    return digest


def build_config(settings: Settings) -> dict[str, Any]:
    """What a version built with these settings records about its model and chunker."""
    return {
        "embedding_model": settings.embedding_model,
        "model_id": settings.model_id,
        "model_hash": model_files_hash(settings.model_path),
        "embed_backend": settings.encoder_backend,  # resolved: "auto" could mean another on another CPU
        "chunk_size": settings.chunk_size,
        "chunk_overlap": settings.chunk_overlap,
        "chunker_hash": settings.chunker_fingerprint,
    }


def config_differences(version: dict, settings: Settings) -> list[str]:
    """Readable reasons why ``settings`` would build something else than ``version`` (config drift)."""
    now = build_config(settings)
    reasons = []
    name = f"{version['store']} v{version['version']}"
    built_with = version.get("embed_backend") or "torch"
    if version["embedding_model"] == now["embedding_model"] and built_with != now["embed_backend"]:
        reasons.append(f"config drift: encode backend changed: {name} was built with {built_with!r}, settings say {now['embed_backend']!r}")
    elif version["model_id"] != now["model_id"]:
        reasons.append(f"config drift: embedding model changed: {name} uses {version['model_id']!r}, settings say {now['model_id']!r}")
    elif version["model_hash"] != now["model_hash"]:
        reasons.append(
            f"config drift: the model files of {now['model_id']!r} changed: {name} was built with files "
            f"{version['model_hash'][:12]}, now {now['model_hash'][:12]}"
        )
    if (version["chunk_size"], version["chunk_overlap"]) != (now["chunk_size"], now["chunk_overlap"]):
        reasons.append(
            f"config drift: chunker settings changed: {name} has chunk_size/overlap "
            f"{version['chunk_size']}/{version['chunk_overlap']}, settings say {now['chunk_size']}/{now['chunk_overlap']}"
        )
    elif version["chunker_hash"] != now["chunker_hash"] and not reasons:
        reasons.append(f"config drift: chunker fingerprint changed: {name} {version['chunker_hash']}, now {now['chunker_hash']}")
    return reasons


@dataclass
class WriteTarget:
    """Where a run writes: the physical collection per store, and the build settings to use."""

    index_name: str
    collections: dict[str, str]
    versions: dict[str, int]
    overrides: dict[str, Any] = field(default_factory=dict)
    live: bool = True  # writing the live versions: commit checks they are still live

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WriteTarget:
        return cls(**data)


def open_catalog(settings: Settings) -> Catalog:
    from rag_ops.catalog import Catalog

    catalog = Catalog(settings.catalog_db_url)
    catalog.migrate()
    return catalog


def live_target(settings: Settings, stores: Iterable[str] | None = None, catalog: Catalog | None = None) -> WriteTarget:
    """The live versions of ``stores`` (default ``settings.stores``); registers version 1 where none exists.

    Raises:
        ConfigError: the stores' live versions were built with different models or chunkers
            (one run embeds once for every store: ingest them separately, or re-index).
    """
    own = catalog is None
    cat = catalog or open_catalog(settings)
    try:
        stores = list(stores or settings.stores)
        index = settings.collection
        live = cat.live_versions(index)
        if any(s not in live for s in stores):
            _bootstrap(cat, settings, [s for s in stores if s not in live], live)
            live = cat.live_versions(index)
        configs = {s: tuple(live[s][f] for f in BUILD_FIELDS) for s in stores}
        if len(set(configs.values())) > 1:
            raise ConfigError(
                f"the stores' live versions of {index!r} were built differently ("
                + "; ".join(f"{s} v{live[s]['version']}: model {live[s]['model_id']}, chunks {live[s]['chunk_size']}/{live[s]['chunk_overlap']}" for s in stores)
                + "): one run embeds once for all its stores. Ingest them separately (--stores) or re-index the lagging one."
            )
        first = live[stores[0]]
        return WriteTarget(
            index_name=index,
            collections={s: live[s]["collection"] for s in stores},
            versions={s: int(live[s]["version"]) for s in stores},
            overrides={f: first[f] for f in BUILD_FIELDS},
            live=True,
        )
    finally:
        if own:
            cat.close()


def _bootstrap(cat: Catalog, settings: Settings, stores: list[str], live: dict[str, dict]) -> None:
    """Register version 1 (live) of ``stores``: built like the other stores' live version if any, else like the settings.

    Safe against runs bootstrapping together: the catalog registers a version only where no live one exists.
    """
    like = next(iter(live.values()), None)
    if like is not None:
        config = {k: like[k] for k in ("embedding_model", "model_id", "model_hash", "embed_backend", "chunk_size", "chunk_overlap", "chunker_hash")}
    else:
        config = build_config(settings)
    for store in stores:
        existing = cat.versions(settings.collection, store)
        row, registered = cat.ensure_live_version(
            {
                "index_name": settings.collection, "store": store,
                "reason": "first ingest" if not existing else "no live version left: a new one", **config,
            },
            lambda v: physical_name(settings.collection, v),
        )
        if registered:
            log.info("index %r: registered %s version %d (%s) as live", settings.collection, store, row["version"], row["collection"])


def live_version(settings: Settings, store: str, catalog: Catalog | None = None) -> dict | None:
    """The live version row of ``settings.collection`` in ``store`` (None before the first ingest)."""
    own = catalog is None
    cat = catalog or open_catalog(settings)
    try:
        return cat.live_versions(settings.collection).get(store)
    finally:
        if own:
            cat.close()


def live_collection(settings: Settings, store: str, catalog: Catalog | None = None) -> str:
    """The physical collection readers of ``store`` use now (version 1's name before any ingest)."""
    row = live_version(settings, store, catalog)
    return row["collection"] if row else physical_name(settings.collection, 1)


def serving_settings(settings: Settings, store: str | None = None, catalog: Catalog | None = None) -> Settings:
    """``settings`` with the model and chunker of the live version (of ``store``, or the first
    configured store): what queries against the live index must be encoded with."""
    row = live_version(settings, store or settings.stores[0], catalog)
    if row is None:
        return settings
    return apply_overrides(settings, {f: row[f] for f in BUILD_FIELDS})


def apply_overrides(settings: Settings, overrides: dict[str, Any] | None) -> Settings:
    """``settings`` with a version's build fields (no copy when nothing differs)."""
    overrides = dict(overrides or {})
    if overrides.get("embed_backend"):  # a concrete backend names its precision too
        overrides["embed_precision"] = "fp32"
    changes = {k: v for k, v in overrides.items() if v is not None and getattr(settings, k) != v}
    return settings.replace(**changes) if changes else settings


def state_url(settings: Settings, index_name: str, version: int, suffix: str = "") -> str:
    """Where a version's document/chunk state lives while it is not live, as recorded in the catalog.

    With a SQLite catalog, a SQLite file in the data dir (``sqlite:///…``). With a server catalog,
    a schema of the catalog's database (``schema:<name>``), so that every worker of a distributed
    executor reaches it; the recorded form names no host and no password
    (:func:`state_db_url` turns it into a URL to open).
    """
    if settings.catalog_is_server:
        return schema_ref(settings, "state", index_name, f"_v{version}{suffix}")
    path = settings.data_dir / "versions" / index_name / f"v{version}{suffix}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def schema_ref(settings: Settings, kind: str, name: str, suffix: str = "") -> str:
    """``schema:<name>``: a schema of the server catalog's database for a catalog of its own (a
    version's state, a golden set's documents), reachable from every worker. Catalogs sharing a
    database (other schemas, other deployments) get schemas of their own."""
    import sqlalchemy as sa

    where = sa.engine.make_url(settings.catalog_db_url).render_as_string(hide_password=True)
    tag = hashlib.sha256(where.encode()).hexdigest()[:6]
    schema = f"ragops_{kind}_{name}{suffix}_{tag}".lower()
    if len(schema) > 63:  # PostgreSQL's identifier limit
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        schema = f"ragops_{kind}_{digest}{suffix}_{tag}".lower()[:63]
    return f"schema:{schema}"


def ensure_state(settings: Settings, recorded: str) -> str:
    """An openable URL of a recorded state, its schema created when missing (secret)."""
    if recorded.startswith("schema:"):
        _schema_ddl(settings, f'CREATE SCHEMA IF NOT EXISTS "{_schema(recorded)}"')
    return state_db_url(settings, recorded)


def state_db_url(settings: Settings, recorded: str) -> str:
    """A SQLAlchemy URL that opens a recorded version state (secret: it may carry the password)."""
    if not recorded.startswith("schema:"):
        return recorded
    import sqlalchemy as sa

    url = sa.engine.make_url(settings.catalog_db_url)
    options = f"-csearch_path={_schema(recorded)}"
    return url.update_query_dict({"options": options}).render_as_string(hide_password=False)


def reset_state(settings: Settings, recorded: str) -> None:
    """Empty a version state (a failed earlier attempt's) so it can be built afresh."""
    drop_state(settings, recorded)
    ensure_state(settings, recorded)


def drop_state(settings: Settings, recorded: str | None) -> None:
    """Remove a version state: its SQLite file, or its schema with every table in it."""
    if not recorded:
        return
    if recorded.startswith("schema:"):
        _schema_ddl(settings, f'DROP SCHEMA IF EXISTS "{_schema(recorded)}" CASCADE')
    elif recorded.startswith("sqlite:///"):
        Path(recorded.split("sqlite:///", 1)[1]).unlink(missing_ok=True)


def _schema(recorded: str) -> str:
    return recorded[len("schema:"):]


def _schema_ddl(settings: Settings, statement: str) -> None:
    import sqlalchemy as sa

    from rag_ops.catalog import Catalog

    cat = Catalog(settings.catalog_db_url)
    try:
        with cat.engine.begin() as conn:
            conn.execute(sa.text(statement))
    finally:
        cat.close()


def describe(rows: list[dict]) -> list[dict[str, Any]]:
    """Version rows as small JSON-safe dicts (``ragops versions --json``)."""
    keys = (
        "index_name", "version", "store", "collection", "status", "model_id", "embed_backend", "chunk_size", "chunk_overlap",
        "dimension", "documents", "chunks", "encoded", "reason", "error", "created_at", "swapped_at",
        "retired_at", "dropped_at",
    )
    return [{k: r.get(k) for k in keys} for r in rows]

