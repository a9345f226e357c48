"""The process's Great Expectations context: the suites as code, their validation definitions
and checkpoints, and the Data Docs sites they write."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import logging
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Iterator

from rag_ops.config import apply_privacy_env

log = logging.getLogger(__name__)

SUITE_PREFIX = "ragops_"  # GX suite names: ragops_documents, ragops_chunks, ragops_embeddings
DOCS_INDEX_LIMIT = 300  # validation results listed on a Data Docs index page (newest first)
_RESULT_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": ["doc_id"]}


# ---------------------------------------------------------------------------- suites as code
def _p(name: str) -> dict:
    return {"$PARAMETER": name}


def _suite_expectations(gx: Any) -> dict[str, list]:
    """The three suites. ``meta.level`` says what a failure does: quarantine (row) or fail (batch)."""
    E = gx.expectations
    row = {"level": "row", "notes": "row-level: a failing row quarantines its document"}
    batch = {"level": "batch", "notes": "batch-level: a failure stops the whole batch"}

    def r() -> dict:
        return dict(row)

    def b() -> dict:
        return dict(batch)

    return {
        "documents": [
            *(E.ExpectColumnValuesToNotBeNull(column=c, meta=r()) for c in ("n_chars", "size", "printable_ratio", "utf8_ok")),
            E.ExpectColumnValuesToBeBetween(column="n_chars", min_value=_p("min_chars"), meta=r()),
            E.ExpectColumnValuesToBeBetween(column="size", min_value=1, max_value=_p("max_document_bytes"), meta=r()),
            E.ExpectColumnValuesToBeInSet(column="utf8_ok", value_set=[True], meta=r()),
            E.ExpectColumnValuesToBeBetween(
                column="printable_ratio", min_value=_p("min_printable_ratio"), max_value=1.0, meta=r()
            ),
        ],
        "chunks": [
            *(E.ExpectColumnValuesToNotBeNull(column=c, meta=r()) for c in ("chunk_id", "doc_id", "source_uri", "seq", "tokens")),
            E.ExpectColumnValuesToBeBetween(column="text_chars", min_value=1, meta=r()),
            E.ExpectColumnValuesToBeBetween(
                column="tokens", min_value=_p("min_chunk_tokens"), max_value=_p("max_chunk_tokens"), meta=r()
            ),
            E.ExpectColumnValuesToBeUnique(column="chunk_id", meta=r()),
            E.ExpectColumnMeanToBeBetween(column="text_repeats", max_value=_p("max_duplicate_chunk_rate"), meta=b()),
        ],
        "embeddings": [
            E.ExpectColumnValuesToBeInSet(column="dim", value_set=_p("embedding_dims"), meta=b()),
            E.ExpectColumnValuesToBeInSet(column="finite", value_set=[True], meta=r()),
            E.ExpectColumnValuesToBeBetween(column="norm", min_value=_p("min_norm"), max_value=_p("max_norm"), meta=r()),
            E.ExpectColumnUniqueValueCountToBeBetween(
                column="fingerprint", min_value=_p("min_distinct_vectors"), meta=b()
            ),
            E.ExpectColumnMeanToBeBetween(
                column="near_duplicate", max_value=_p("max_near_duplicate_rate"), meta=b()
            ),
        ],
    }


# ---------------------------------------------------------------------------- the GX context
class _Gx:
    """The process's ephemeral Data Context with the suites, definitions and checkpoints."""

    def __init__(self) -> None:
        apply_privacy_env()  # GX_ANALYTICS_ENABLED=False before GX is imported
        gx_log = logging.getLogger("great_expectations")
        if gx_log.level == logging.NOTSET:  # GX logs dozens of INFO lines at import; keep its warnings
            gx_log.setLevel(logging.WARNING)
        t0 = time.perf_counter()
        with _gx_import_scope():
            import great_expectations as gx
            from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier
            from great_expectations.core.run_identifier import RunIdentifier
            from great_expectations.data_context.types.base import (
                DataContextConfig,
                InMemoryStoreBackendDefaults,
                ProgressBarsConfig,
            )

        self.import_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        _define_views()
        self.gx = gx
        self.ExpectationSuiteIdentifier = ExpectationSuiteIdentifier
        self.RunIdentifier = RunIdentifier
        config = DataContextConfig(
            # in-memory stores and NO data docs site: GX's default would be a temp folder
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.memory_store = self.context.validation_results_store_name
        source = self.context.data_sources.add_pandas("ragops_quality")
        self.definitions: dict[str, Any] = {}
        for name, expectations in _suite_expectations(gx).items():
            asset = source.add_dataframe_asset(name)
            batch_definition = asset.add_batch_definition_whole_dataframe(name)
            suite = self.context.suites.add(gx.ExpectationSuite(name=SUITE_PREFIX + name))
            for expectation in expectations:
                suite.add_expectation(expectation)
            self.definitions[name] = self.context.validation_definitions.add(
                gx.ValidationDefinition(name=SUITE_PREFIX + name, data=batch_definition, suite=suite)
            )
        self.checkpoints: dict[str, Any] = {}
        self.sites: dict[str, tuple[str, str]] = {}  # docs_dir -> (site name, results store name)
        self.setup_seconds = time.perf_counter() - t1

    def site_for(self, docs_dir: Path) -> tuple[str, str]:
        """The data docs site (and its filesystem results store) at docs_dir, added once."""
        key = str(docs_dir)
        if key not in self.sites:
            tag = hashlib.sha256(key.encode()).hexdigest()[:12]
            site, store = f"ragops_docs_{tag}", f"ragops_results_{tag}"
            self.context.add_store(
                store,
                {
                    "class_name": "ValidationResultsStore",
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(docs_dir / ".gx_results"),
                    },
                },
            )
            self.context.add_data_docs_site(
                site,
                {
                    "class_name": "SiteBuilder",
                    "show_how_to_buttons": False,
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": key},
                    "site_index_builder": {
                        "class_name": "DefaultSiteIndexBuilder",
                        "validation_results_limit": DOCS_INDEX_LIMIT,
                        "view": _view("RagopsIndexPageView", docs_dir),
                    },
                    "site_section_builders": {
                        # every run name is a validation (GX files run names containing
                        # "profiling" under a profiling section otherwise)
                        "validations": {
                            "source_store_name": store, "run_name_filter": {"matches_regex": ".*"},
                            "view": _view("RagopsPageView", docs_dir),
                        },
                        "expectations": {"view": _view("RagopsPageView", docs_dir)},
                        "profiling": "None",
                    },
                },
            )
            self.sites[key] = (site, store)
        return self.sites[key]

    def checkpoint(self, suite: str) -> Any:
        """The suite's checkpoint. It has no Data Docs action: a call builds its pages once, after
        its last suite (:meth:`build_docs`), rather than the site's index after every suite."""
        if suite not in self.checkpoints:
            self.checkpoints[suite] = self.context.checkpoints.add(
                self.gx.Checkpoint(
                    name=f"{SUITE_PREFIX}{suite}",
                    validation_definitions=[self.definitions[suite]],
                    actions=[],
                    result_format=_RESULT_FORMAT,
                )
            )
        return self.checkpoints[suite]

    def build_docs(self, docs_dir: Path, results: list[tuple[Any, str]]) -> None:
        """Write the pages of these validation results (``(result id, suite name)``) and of their
        suites to the site at docs_dir, then its index."""
        site, _ = self.site_for(docs_dir)
        ids: list[Any] = [rid for rid, _ in results]
        ids += [self.ExpectationSuiteIdentifier(name=suite) for suite in dict.fromkeys(name for _, name in results)]
        with _GX_LOCK, _docs_lock(docs_dir):
            self.context.build_data_docs(site_names=[site], resource_identifiers=ids or None)

    @contextlib.contextmanager
    def results_store(self, name: str) -> Iterator[None]:
        """Validation results go to the named store for the duration (a docs_dir's own store)."""
        self.context.validation_results_store_name = name
        try:
            yield
        finally:
            self.context.validation_results_store_name = self.memory_store

    def forget_memory_results(self) -> None:
        """Drop results kept in memory: a long-lived process must not grow with every call."""
        store = self.context.stores[self.memory_store]
        for key in store.list_keys():
            store.remove_key(key)


@contextlib.contextmanager
def _gx_import_scope() -> Iterator[None]:
    """Great Expectations' import without what it imports for features the suites never use.

    ``scipy.stats`` (statistical expectations; 0.8 of GX's 2.6 s here) and ``altair`` (one
    expectation's charts; 0.15 s) are loaded on first use instead. SQLAlchemy, for GX's SQL data
    sources (an optional extra of GX: without it GX runs on pandas alone), is hidden from GX in a
    process that has not imported it (the CLI's gate helper; 0.15 s): a later import of it by
    anything else still works. A process that imported SQLAlchemy first keeps GX's SQL support.
    """
    _load_on_first_use("scipy.stats")
    _load_on_first_use("altair")
    hidden = "sqlalchemy" not in sys.modules
    if hidden:
        sys.modules["sqlalchemy"] = None  # type: ignore[assignment]  # `import sqlalchemy` raises ImportError
    try:
        yield
    finally:
        if hidden and "sqlalchemy" in sys.modules and sys.modules["sqlalchemy"] is None:
            del sys.modules["sqlalchemy"]


class _OnFirstUse(types.ModuleType):
    """Stands in for a module until one of its attributes is asked for, then imports it (a
    ``LazyLoader`` module loads on ``import``'s own look at its ``__spec__``)."""

    def __getattr__(self, attr: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


def _load_on_first_use(name: str) -> None:
    if name in sys.modules or importlib.util.find_spec(name.partition(".")[0]) is None:
        return
    stand_in = _OnFirstUse(name)
    sys.modules[name] = stand_in
    parent, _, child = name.rpartition(".")
    if parent:  # ``from scipy import stats`` asks the package's attribute first
        setattr(importlib.import_module(parent), child, stand_in)


def _template_cache_dir(docs_dir: Path) -> Path:
    """Where Data Docs' compiled templates are kept: beside the site, not in it (the site is
    served as it is)."""
    return docs_dir.parent / ".data_docs_templates"


def _view(class_name: str, docs_dir: Path) -> dict:
    return {"class_name": class_name, "module_name": __name__, "template_cache_dir": str(_template_cache_dir(docs_dir))}


def _define_views() -> None:
    """The page views a Data Docs site of ragops names in its config (GX instantiates them by
    name): GX's, with a bytecode cache for their Jinja templates. GX compiles every template again
    for each page it writes (0.3-0.5 s a gate here); with the cache on disk, a new process loads
    them compiled."""
    from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
    from jinja2 import FileSystemBytecodeCache

    def cached(base: type) -> type:
        class View(base):
            def __init__(self, custom_styles_directory=None, custom_views_directory=None, template_cache_dir=None):
                super().__init__(custom_styles_directory=custom_styles_directory, custom_views_directory=custom_views_directory)
                if template_cache_dir:
                    # Jinja keys each entry by the template's source checksum and its own and
                    # Python's versions, and writes it atomically: safe to share across runs
                    path = Path(template_cache_dir)
                    path.mkdir(mode=0o700, parents=True, exist_ok=True)
                    self.env.bytecode_cache = FileSystemBytecodeCache(str(path))

        return View

    globals().update(
        RagopsPageView=cached(DefaultJinjaPageView),
        RagopsIndexPageView=cached(DefaultJinjaIndexPageView),
    )


_GX_LOCK = threading.RLock()
_GX_STATE: _Gx | None = None


def ready() -> None:
    """Import GX and set up the process's context and suites now, ahead of the first check."""
    _gx()


def _gx() -> _Gx:
    global _GX_STATE
    with _GX_LOCK:
        if _GX_STATE is None:
            _GX_STATE = _Gx()
            log.info(
                "quality: Great Expectations ready (import %.2fs, context and suites %.2fs)",
                _GX_STATE.import_seconds, _GX_STATE.setup_seconds,
            )
        return _GX_STATE


@contextlib.contextmanager
def _docs_lock(docs_dir: Path) -> Iterator[None]:
    """One writer at a time per docs_dir, across processes (Airflow mapped tasks)."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    with open(docs_dir / ".ragops-quality.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

