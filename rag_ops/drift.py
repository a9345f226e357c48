"""Embedding drift: does a new batch of vectors come from the same distribution as a reference?

Three tests compare a reference sample ``ref`` (n, d) with a new batch ``new`` (m, d) of
L2-normalised embeddings. Each gives a number and a verdict; a rule combines the verdicts.

**Domain classifier** (``classifier``): the "model" method of Evidently's embeddings drift
(docs.evidentlyai.com, *Embeddings drift parameters*; a classifier two-sample test in the sense of
Lopez-Paz & Oquab, *Revisiting Classifier Two-Sample Tests*, ICLR 2017). Reference rows are
labelled 0 and new rows 1; the larger side is first subsampled (seeded, without replacement) to
the smaller side's size so the classes are balanced. A logistic regression is trained with
stratified k-fold cross-validation (k = min(5, rows per class), shuffled with the seed) and the
ROC AUC of the out-of-fold predicted probabilities is the score. Two samples of one
distribution cannot be told apart (AUC about 0.5); drift when AUC > ``drift_auc_threshold``
(0.55, Evidently's default).

**Maximum mean discrepancy** (``mmd``): Gretton et al., *A Kernel Two-Sample Test*, JMLR 13
(2012) 723-773. With the Gaussian RBF kernel k(x, y) = exp(-||x - y||^2 / (2 sigma^2)), the
unbiased estimate (their eq. 3, MMD^2_u) is::

    MMD^2_u = 1/(n(n-1)) sum_{i!=j} k(x_i, x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i, y_j)
              - 2/(nm) sum_{i,j} k(x_i, y_j)

The bandwidth sigma is the median heuristic: the median Euclidean distance between distinct rows
of the pooled sample (ref and new together). The p-value comes from a permutation test, as in
alibi-detect's ``MMDDrift`` (default ``p_val`` 0.05): the pooled rows are re-split at random N
times (``drift_mmd_permutations``, seeded) and p = (1 + #{permuted MMD^2_u >= observed}) / (1 + N),
which is in (0, 1] and never 0. Drift when p < ``drift_mmd_p_value``. The pooled kernel matrix is
computed once; each permutation only re-indexes it (all permutations in one matrix product).

**Centroid cosine distance** (``centroid``): 1 - cos(mean(ref), mean(new)), in [0, 2]. Cheap and
easy to read, but it has no null distribution of its own: its threshold
(``drift_centroid_threshold``) was chosen with ``bench/drift_bench.py`` (see docs/drift.md).

**Rule** (``drift_rule``): ``any`` (one test suffices), ``majority`` (at least two of the three),
``all``, or a single test's name. A batch (or reference) with fewer than ``drift_min_sample``
rows is an "insufficient sample": no test runs and it is never drift.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag_ops.config import DRIFT_RULES, DRIFT_TESTS, Settings
from rag_ops.errors import ConfigError

log = logging.getLogger(__name__)

_MAX_FOLDS = 5
_RULE_MEANING = {"any": "any test", "majority": "at least 2 of 3", "all": "every test"}


@dataclass
class DriftReport:
    """The outcome of :func:`detect_drift`.

    ``auc``, ``mmd2``, ``p_value``, ``centroid_distance`` and ``bandwidth`` are None when the sample
    was insufficient. ``verdicts`` maps each test (classifier, mmd, centroid) to whether it flags
    drift. ``reasons`` holds one readable line per test (its value against its threshold) and a
    last line with the rule's decision.
    """

    drifted: bool
    sufficient: bool
    rule: str
    reference_size: int
    batch_size: int
    auc: float | None = None
    mmd2: float | None = None
    p_value: float | None = None
    centroid_distance: float | None = None
    bandwidth: float | None = None
    permutations: int = 0
    verdicts: dict[str, bool] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (for XCom, logs and :meth:`Catalog.write_drift_report`)."""
        return asdict(self)


def detect_drift(
    ref: np.ndarray, new: np.ndarray, *, settings: Settings | None = None, seed: int = 0
) -> DriftReport:
    """Compare a new batch of embeddings with a reference sample.

    Args:
        ref: reference vectors, shape (n, d), rows L2-normalised (e.g. :func:`sample_reference`
            of the live collection).
        new: the new batch, shape (m, d), same model and dimension.
        settings: thresholds, permutations, minimum sample and rule (the ``drift_*`` fields);
            None uses the built-in defaults (not the environment).
        seed: seeds the class balancing, the folds and the permutations; the same inputs and
            seed give the same report.

    Returns:
        A :class:`DriftReport`. With fewer than ``drift_min_sample`` rows on either side it is
        not drift and ``sufficient`` is False.

    Raises:
        ConfigError: an input is empty, not 2-D, not finite, or the dimensions differ.
    """
    t0 = time.perf_counter()
    s = settings if settings is not None else Settings()
    ref = _as_matrix(ref, "ref")
    new = _as_matrix(new, "new")
    if ref.shape[1] != new.shape[1]:
        raise ConfigError(
            f"ref and new must have the same dimension. Got ref {ref.shape[1]} (shape {ref.shape}) "
            f"and new {new.shape[1]} (shape {new.shape})."
        )
    n, m = len(ref), len(new)
    if min(n, m) < s.drift_min_sample:
        which = "batch" if m < s.drift_min_sample else "reference"
        got = m if which == "batch" else n
        return DriftReport(
            drifted=False, sufficient=False, rule=s.drift_rule, reference_size=n, batch_size=m,
            reasons=[f"insufficient sample: {which} of {got} vectors < drift_min_sample {s.drift_min_sample}; not tested"],
            seconds=time.perf_counter() - t0,
        )

    seeds = np.random.SeedSequence(seed).spawn(2)
    auc = classifier_auc(ref, new, seed=int(seeds[0].generate_state(1)[0]))
    mmd2, p_value, sigma = mmd_permutation_test(
        ref, new, permutations=s.drift_mmd_permutations, seed=np.random.default_rng(seeds[1])
    )
    dist = centroid_distance(ref, new)

    verdicts = {
        "classifier": auc > s.drift_auc_threshold,
        "mmd": p_value < s.drift_mmd_p_value,
        "centroid": dist > s.drift_centroid_threshold,
    }
    drifted = combine_verdicts(verdicts, s.drift_rule)
    reasons = [
        f"domain classifier ROC AUC {auc:.3f} {'>' if verdicts['classifier'] else '<='} {s.drift_auc_threshold}",
        f"MMD permutation p-value {p_value:.3f} {'<' if verdicts['mmd'] else '>='} {s.drift_mmd_p_value} "
        f"(MMD² {mmd2:.5f}, {s.drift_mmd_permutations} permutations)",
        f"centroid cosine distance {dist:.4f} {'>' if verdicts['centroid'] else '<='} {s.drift_centroid_threshold}",
        f"rule {s.drift_rule!r} ({_RULE_MEANING.get(s.drift_rule, f'the {s.drift_rule} test alone')}): "
        f"{sum(verdicts.values())} of {len(verdicts)} tests flag drift -> {'drift' if drifted else 'no drift'}",
    ]
    report = DriftReport(
        drifted=drifted, sufficient=True, rule=s.drift_rule, reference_size=n, batch_size=m, auc=auc,
        mmd2=mmd2, p_value=p_value, centroid_distance=dist, bandwidth=sigma,
        permutations=s.drift_mmd_permutations, verdicts=verdicts, reasons=reasons,
        seconds=time.perf_counter() - t0,
    )
    log.info("drift check (%d ref, %d new): %s", n, m, "; ".join(reasons))
    return report


def combine_verdicts(verdicts: dict[str, bool], rule: str) -> bool:
    """The overall verdict of per-test verdicts under a rule.

    Args:
        verdicts: test name (classifier, mmd, centroid) -> flags drift.
        rule: ``any``, ``majority`` (more than half of the tests), ``all``, or a test name.

    Raises:
        ConfigError: unknown rule, or a rule naming a test missing from ``verdicts``.
    """
    if rule not in DRIFT_RULES:
        raise ConfigError(f"drift rule must be one of {list(DRIFT_RULES)}. Got {rule!r}.")
    flags = list(verdicts.values())
    if rule == "any":
        return any(flags)
    if rule == "all":
        return bool(flags) and all(flags)
    if rule == "majority":
        return 2 * sum(flags) > len(flags)
    if rule not in verdicts:
        raise ConfigError(f"drift rule {rule!r} names a test that did not run. Got verdicts for {sorted(verdicts)}.")
    return verdicts[rule]


def classifier_auc(ref: np.ndarray, new: np.ndarray, *, seed: int = 0) -> float:
    """Out-of-fold ROC AUC of a logistic regression telling ``new`` (1) from ``ref`` (0).

    The larger side is subsampled (seeded, without replacement) to the smaller side's size;
    folds are stratified, k = min(5, rows per class), shuffled with ``seed``.

    Raises:
        ConfigError: fewer than 2 rows on a side.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    size = min(len(ref), len(new))
    if size < 2:
        raise ConfigError(f"the domain classifier needs >= 2 rows per side. Got {len(ref)} and {len(new)}.")
    rng = np.random.default_rng(seed)
    if len(ref) > size:
        ref = ref[np.sort(rng.choice(len(ref), size, replace=False))]
    if len(new) > size:
        new = new[np.sort(rng.choice(len(new), size, replace=False))]
    x = np.vstack([ref, new])
    y = np.r_[np.zeros(size, dtype=int), np.ones(size, dtype=int)]
    folds = StratifiedKFold(n_splits=min(_MAX_FOLDS, size), shuffle=True, random_state=seed % 2**32)
    proba = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, proba))


def mmd_permutation_test(
    ref: np.ndarray, new: np.ndarray, *, permutations: int = 200, seed: int | np.random.Generator = 0
) -> tuple[float, float, float]:
    """Unbiased MMD² with an RBF kernel (median-heuristic bandwidth) and its permutation p-value.

    Returns:
        ``(mmd2, p_value, sigma)``: the observed MMD²_u, p = (1 + #{permuted >= observed}) / (1 + N),
        and the bandwidth used.

    Raises:
        ConfigError: fewer than 2 rows on a side, or ``permutations`` < 1.
    """
    n, m = len(ref), len(new)
    if min(n, m) < 2 or permutations < 1:
        raise ConfigError(
            f"the MMD test needs >= 2 rows per side and >= 1 permutation. Got {n}, {m} and {permutations}."
        )
    pooled = np.vstack([ref, new]).astype(np.float64)
    sq = _squared_distances(pooled)
    sigma = median_bandwidth(sq)
    kernel = np.exp(-sq / (2.0 * sigma * sigma))
    total = n + m
    # row 0: the observed split; rows 1..N: random re-splits of the pooled rows (first n -> "ref")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    order = rng.permuted(np.tile(np.arange(total), (permutations, 1)), axis=1)
    is_ref = np.zeros((permutations + 1, total), dtype=bool)
    is_ref[0, :n] = True
    np.put_along_axis(is_ref[1:], order[:, :n], True, axis=1)
    stats = _mmd2_unbiased(kernel, is_ref, n, m)
    observed = float(stats[0])
    p_value = float((1 + np.count_nonzero(stats[1:] >= observed)) / (1 + permutations))
    return observed, p_value, sigma


def centroid_distance(ref: np.ndarray, new: np.ndarray) -> float:
    """1 - cosine similarity of the two mean vectors (1.0 when a mean is the zero vector)."""
    a = np.asarray(ref, dtype=np.float64).mean(axis=0)
    b = np.asarray(new, dtype=np.float64).mean(axis=0)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms < 1e-12:
        return 1.0
    return float(1.0 - np.clip(a @ b / norms, -1.0, 1.0))


def median_bandwidth(squared_distances: np.ndarray) -> float:
    """The median heuristic: median Euclidean distance over distinct pairs (i < j).

    Falls back to 1.0 when every pair coincides (all rows equal).
    """
    upper = squared_distances[np.triu_indices(len(squared_distances), k=1)]
    sigma = float(np.median(np.sqrt(upper))) if upper.size else 0.0
    return sigma if sigma > 1e-12 else 1.0


def sample_reference(vectors: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of ``size`` rows without replacement (all rows, in order, if fewer).

    Args:
        vectors: (n, d) embeddings, e.g. every vector of the live collection.
        size: rows wanted (``drift_reference_size``).
        seed: same seed and input, same sample.

    Raises:
        ConfigError: ``size`` < 1 or ``vectors`` not 2-D.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ConfigError(f"vectors must be a 2-D array (rows, dimension). Got shape {vectors.shape}.")
    if size < 1:
        raise ConfigError(f"reference size must be >= 1. Got {size}.")
    if size >= len(vectors):
        return vectors.copy()
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size, replace=False))
    return vectors[rows]


# ------------------------------------------------------------------------------------ helpers
def _as_matrix(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ConfigError(f"{name} must be a non-empty 2-D array (rows, dimension). Got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr).all(axis=1)))
        raise ConfigError(f"{name} must hold finite numbers. Got {bad} row(s) with NaN or infinity.")
    return arr


def _squared_distances(x: np.ndarray) -> np.ndarray:
    norms = np.einsum("ij,ij->i", x, x)
    sq = norms[:, None] + norms[None, :] - 2.0 * (x @ x.T)
    np.maximum(sq, 0.0, out=sq)
    np.fill_diagonal(sq, 0.0)
    return sq


def _mmd2_unbiased(kernel: np.ndarray, is_ref: np.ndarray, n: int, m: int) -> np.ndarray:
    """MMD²_u for each split (row of the boolean ``is_ref``), from one pooled kernel matrix."""
    a = is_ref.astype(np.float64)
    b = 1.0 - a
    ka = a @ kernel  # (splits, total): row sums of K over each split's "ref" columns
    diag = np.diag(kernel)
    k_xx = np.einsum("st,st->s", ka, a) - a @ diag
    k_xy = np.einsum("st,st->s", ka, b)
    kb = kernel.sum(axis=0)[None, :] - ka  # = b @ kernel, without a second product
    k_yy = np.einsum("st,st->s", kb, b) - b @ diag
    return k_xx / (n * (n - 1)) + k_yy / (m * (m - 1)) - 2.0 * k_xy / (n * m)


# ------------------------------------------------------------------------------ index checks
def ensure_reference(settings: Settings, catalog, row: dict, *, force: bool = False) -> tuple[np.ndarray, str]:
    """The reference sample of a live version, made (and recorded) when it has none.

    The sample is ``drift_reference_size`` vectors of the documents the catalog lists as
    indexed, one chunk each (:func:`_one_per_document`), read from the embedding cache under the
    version's model (nothing is encoded). It is kept in the catalog (``drift_references``) with
    the time it was taken: chunks of documents indexed after that time are the "new batch" of
    later checks.

    Returns:
        ``(vectors, taken_at)``.
    """
    from rag_ops.catalog import utcnow

    key = (row["index_name"], row["store"], row["version"])
    if not force:
        kept = catalog.reference(*key)
        if kept is not None:
            return kept
        path = row.get("reference_path")
        if path and Path(path).is_file():  # kept as a file by an earlier release: move it into the catalog
            with np.load(path) as data:
                vectors, taken_at = data["vectors"], str(data["taken_at"])
            catalog.save_reference(*key, vectors, taken_at)
            catalog.update_version(*key, reference_path="catalog")
            return vectors, taken_at
    vectors = _one_per_document(settings, catalog.indexed_chunk_hashes(), row["model_id"])
    sample = sample_reference(vectors, settings.drift_reference_size) if len(vectors) else vectors
    taken_at = utcnow()
    # in the catalog's database, so a check on any worker compares against the same sample
    catalog.save_reference(*key, sample.astype(np.float32), taken_at)
    catalog.update_version(*key, reference_path="catalog")
    log.info("drift reference of %s v%d: %d vectors sampled from %d chunks", row["index_name"], row["version"], len(sample), len(vectors))
    return sample, taken_at


def _one_per_document(settings: Settings, pairs: list[tuple[str, str]], model_id: str) -> np.ndarray:
    """One chunk vector per document, from the embedding cache (nothing is encoded).

    The chunks of one document are not independent samples: with every chunk, 80 random SciFact
    documents against 80 others of the same collection gave ROC AUC 0.83 and MMD p 0.005 (a
    false alarm; the permutation test assumes exchangeable rows); with one chunk per document,
    AUC 0.58 and p 0.14 (no drift) while Cranfield against SciFact still gave AUC 1.0. The
    chunk kept is a deterministic pseudo-random one (smallest hash of document and text).
    """
    import hashlib

    from rag_ops.cache import open_cache

    pick: dict[str, tuple[str, str]] = {}
    for doc_id, text_hash in pairs:
        key = hashlib.sha256(f"{doc_id}|{text_hash}".encode()).hexdigest()
        if doc_id not in pick or key < pick[doc_id][0]:
            pick[doc_id] = (key, text_hash)
    # rows in text-hash order: the same texts give the same sample and the same report
    # wherever the files live (document ids come from paths; the tests' folds follow row order)
    hashes = sorted(pick[d][1] for d in pick)
    cache = open_cache(settings)
    try:
        found = cache.get_many(model_id, hashes)
    finally:
        cache.close()
    rows = [found[h] for h in hashes if h in found]
    return np.stack(rows) if rows else np.zeros((0, 1), np.float32)


def check_index(settings: Settings, run_id: str | None = None) -> dict[str, Any]:
    """Nightly drift check of the index ``settings.collection`` (``ragops drift``, ``rag_reembed``).

    * **Config drift**: the settings' model id, model files or chunker settings differ from a live
      version's (:func:`rag_ops.versions.config_differences`).
    * **Embedding drift**: the vectors of documents indexed since the live version's reference
      sample was taken (one chunk each), against that sample (:func:`detect_drift`), from the
      embedding cache.
      The report is written to ``drift_reports``.

    Returns:
        ``drifted`` (bool), ``reasons`` (strings), ``config`` (config-drift reasons), and
        ``embedding`` (the drift report as a dict, None before the first ingest).
    """
    from rag_ops.pipeline import new_run_id
    from rag_ops.versions import config_differences, open_catalog

    run_id = run_id or new_run_id().replace("cli__", "drift__")
    cat = open_catalog(settings)
    try:
        live = cat.live_versions(settings.collection)
        config = [r for s in settings.stores if s in live for r in config_differences(live[s], settings)]
        config = list(dict.fromkeys(config))
        embedding = None
        row = live.get(settings.stores[0]) or next(iter(live.values()), None)
        if row is not None:
            ref, taken_at = ensure_reference(settings, cat, row)
            new = _one_per_document(settings, cat.indexed_chunk_hashes(changed_after=taken_at), row["model_id"])
            if len(ref) == 0 or len(new) == 0:
                report = DriftReport(
                    drifted=False, sufficient=False, rule=settings.drift_rule, reference_size=len(ref), batch_size=len(new),
                    reasons=[f"insufficient sample: {len(new)} document(s) indexed since the reference of {taken_at}, "
                             f"{len(ref)} in the reference; not tested"],
                )
            else:
                report = detect_drift(ref, new, settings=settings)
            embedding = report.as_dict()
            cat.write_drift_report(run_id, settings.collection, f"{row['store']}:v{row['version']}", row["model_id"], embedding)
    finally:
        cat.close()
    drifted = bool(config) or bool(embedding and embedding["drifted"])
    reasons = config + ([("embedding drift: " if embedding["drifted"] else "no embedding drift: ") + "; ".join(embedding["reasons"])] if embedding else [])
    if not reasons:
        reasons = ["no live version yet: nothing to compare"]
    log.info("drift check of %r: %s", settings.collection, " | ".join(reasons))
    return {"drifted": drifted, "reasons": reasons, "config": config, "embedding": embedding, "run_id": run_id}
