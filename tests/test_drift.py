"""rag_ops.drift: known answers on synthetic vectors, one real-model case, the drift_reports table."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sqlalchemy as sa

from rag_ops import drift
from rag_ops.catalog import Catalog
from rag_ops.config import Settings
from rag_ops.drift import DriftReport, combine_verdicts, detect_drift, sample_reference
from rag_ops.errors import ConfigError

DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def sample(rng: np.random.Generator, rows: int, shift: float = 0.0) -> np.ndarray:
    """Vectors like a sentence model's: a shared direction (they are anisotropic) plus noise;
    ``shift`` moves the mean along a 4-dimensional subspace."""
    x = np.zeros((rows, DIM))
    x[:, 0] = 1.0
    x += rng.normal(scale=0.1, size=(rows, DIM))
    x[:, 1:5] += shift
    return unit(x)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path)


# ------------------------------------------------------------------------------ known answers
def test_same_distribution_is_not_drift_in_most_seeded_trials(settings):
    reports = []
    for trial in range(20):
        rng = np.random.default_rng(trial)
        reports.append(detect_drift(sample(rng, 300), sample(rng, 150), settings=settings, seed=trial))
    assert sum(r.drifted for r in reports) <= 2, [r.reasons for r in reports if r.drifted]
    aucs = np.array([r.auc for r in reports])
    assert abs(aucs.mean() - 0.5) < 0.04, aucs  # identical distributions: a coin flip
    assert sum(r.p_value < 0.05 for r in reports) <= 3
    assert all(r.sufficient and r.reference_size == 300 and r.batch_size == 150 for r in reports)


def test_mean_shift_on_a_subspace_is_drift_by_every_test(settings):
    for trial in range(3):
        rng = np.random.default_rng(100 + trial)
        report = detect_drift(sample(rng, 300), sample(rng, 150, shift=0.3), settings=settings, seed=trial)
        assert report.drifted
        assert report.verdicts == {"classifier": True, "mmd": True, "centroid": True}, report.reasons
        assert report.auc > 0.8
        assert report.p_value == pytest.approx(1 / (1 + settings.drift_mmd_permutations))
        assert report.reasons[0].startswith("domain classifier ROC AUC ") and f"> {settings.drift_auc_threshold}" in report.reasons[0]
        assert "-> drift" in report.reasons[-1]


def test_p_value_is_a_permutation_fraction_in_0_1(settings):
    rng = np.random.default_rng(5)
    for n, m, shift in ((40, 40, 0.0), (80, 30, 0.05), (60, 60, 0.3)):
        mmd2, p, sigma = drift.mmd_permutation_test(sample(rng, n), sample(rng, m, shift), permutations=99, seed=1)
        assert 0.0 < p <= 1.0
        assert (p * 100) == pytest.approx(round(p * 100))  # (1 + k) / (1 + 99)
        assert sigma > 0


def test_unbiased_mmd_and_median_bandwidth_match_their_definitions():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
    pooled = np.vstack([x, y])
    dists = [np.linalg.norm(a - b) for a, b in itertools.combinations(pooled, 2)]
    sigma = float(np.median(dists))
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))  # noqa: E731
    expected = (
        sum(k(a, b) for i, a in enumerate(x) for j, b in enumerate(x) if i != j) / (7 * 6)
        + sum(k(a, b) for i, a in enumerate(y) for j, b in enumerate(y) if i != j) / (5 * 4)
        - 2 * sum(k(a, b) for a in x for b in y) / (7 * 5)
    )
    mmd2, _, got_sigma = drift.mmd_permutation_test(x, y, permutations=19, seed=0)
    assert got_sigma == pytest.approx(sigma)
    assert mmd2 == pytest.approx(expected, rel=1e-9)


def test_centroid_distance_known_values():
    e = np.eye(3)
    assert drift.centroid_distance(e[[0, 0]], e[[0, 0]]) == pytest.approx(0.0)
    assert drift.centroid_distance(e[[0, 0]], e[[1, 1]]) == pytest.approx(1.0)
    assert drift.centroid_distance(e[[0]], -e[[0]]) == pytest.approx(2.0)
    assert drift.centroid_distance(e[[0, 1]], e[[0]]) == pytest.approx(1 - np.sqrt(0.5))


def test_classifier_balances_the_classes_and_scores_about_half_on_identical_data():
    rng = np.random.default_rng(11)
    aucs = [drift.classifier_auc(sample(rng, 500), sample(rng, 60), seed=s) for s in range(10)]
    assert abs(np.mean(aucs) - 0.5) < 0.05
    assert drift.classifier_auc(sample(rng, 200), sample(rng, 60, shift=0.3), seed=0) > 0.95


def test_same_seed_same_report_other_seed_other_permutations(settings):
    rng = np.random.default_rng(9)
    ref, new = sample(rng, 200), sample(rng, 100, shift=0.01)
    a = detect_drift(ref, new, settings=settings, seed=4).as_dict()
    b = detect_drift(ref, new, settings=settings, seed=4).as_dict()
    for r in (a, b):
        r.pop("seconds")
    assert a == b
    c = detect_drift(ref, new, settings=settings, seed=5)
    assert (c.auc, c.p_value) != (a["auc"], a["p_value"])
    assert c.mmd2 == pytest.approx(a["mmd2"]) and c.centroid_distance == pytest.approx(a["centroid_distance"])


def test_small_batch_is_an_insufficient_sample_not_drift(settings):
    rng = np.random.default_rng(2)
    ref = sample(rng, 200)
    small = sample(rng, settings.drift_min_sample - 1, shift=0.5)  # clearly shifted, but too few
    report = detect_drift(ref, small, settings=settings)
    assert isinstance(report, DriftReport)
    assert not report.drifted and not report.sufficient
    assert report.auc is None and report.p_value is None and report.verdicts == {}
    assert report.reasons == [
        f"insufficient sample: batch of {settings.drift_min_sample - 1} vectors < "
        f"drift_min_sample {settings.drift_min_sample}; not tested"
    ]
    assert detect_drift(ref[:12], sample(rng, 100), settings=settings).reasons[0].startswith(
        "insufficient sample: reference of 12 vectors"
    )
    exact = detect_drift(ref, sample(rng, settings.drift_min_sample, shift=0.5), settings=settings)
    assert exact.sufficient and exact.drifted


@pytest.mark.parametrize(
    ("ref", "new", "message"),
    [
        (np.ones((40, 8)), np.ones((40, 6)), "same dimension. Got ref 8 (shape (40, 8)) and new 6 (shape (40, 6))"),
        (np.ones((0, 8)), np.ones((40, 8)), "ref must be a non-empty 2-D array (rows, dimension). Got shape (0, 8)"),
        (np.ones((40, 8)), np.ones(8), "new must be a non-empty 2-D array (rows, dimension). Got shape (8,)"),
        (np.ones((40, 8)), np.full((40, 8), np.nan), "new must hold finite numbers. Got 40 row(s)"),
    ],
)
def test_bad_inputs_raise_config_error_saying_what_was_received(ref, new, message, settings):
    with pytest.raises(ConfigError) as info:
        detect_drift(ref, new, settings=settings)
    assert message in str(info.value)


def test_rules_combine_verdicts():
    one = {"classifier": True, "mmd": False, "centroid": False}
    two = {"classifier": True, "mmd": True, "centroid": False}
    assert combine_verdicts(one, "any") and not combine_verdicts(one, "majority")
    assert combine_verdicts(two, "majority") and not combine_verdicts(two, "all")
    assert combine_verdicts(two, "mmd") and not combine_verdicts(two, "centroid")
    with pytest.raises(ConfigError, match="Got 'most'"):
        combine_verdicts(two, "most")


def test_rule_setting_decides_the_overall_verdict(tmp_path):
    rng = np.random.default_rng(21)
    ref, new = sample(rng, 200), sample(rng, 100, shift=0.15)
    by_rule = {
        rule: detect_drift(ref, new, settings=Settings(data_dir=tmp_path, drift_rule=rule, drift_centroid_threshold=1.5))
        for rule in ("any", "majority", "all", "centroid")
    }
    assert by_rule["any"].drifted and by_rule["majority"].drifted
    assert not by_rule["all"].drifted and not by_rule["centroid"].drifted  # centroid cannot reach 1.5 here
    assert by_rule["centroid"].reasons[2].endswith("<= 1.5")


def test_sample_reference_is_seeded_and_without_replacement():
    vectors = np.arange(200, dtype=np.float32).reshape(100, 2)
    a = sample_reference(vectors, 30, seed=1)
    assert a.shape == (30, 2) and len({row[0] for row in a}) == 30
    assert np.array_equal(a, sample_reference(vectors, 30, seed=1))
    assert not np.array_equal(a, sample_reference(vectors, 30, seed=2))
    assert np.array_equal(sample_reference(vectors, 500, seed=1), vectors)
    with pytest.raises(ConfigError, match="Got 0"):
        sample_reference(vectors, 0)


# ------------------------------------------------------------------------------ settings
def test_drift_settings_from_env_and_validation(tmp_path):
    s = Settings.from_env({"RAGOPS_DRIFT_RULE": "any", "RAGOPS_DRIFT_MMD_PERMUTATIONS": "99",
                           "RAGOPS_DRIFT_AUC_THRESHOLD": "0.6"}, data_dir=tmp_path)
    assert (s.drift_rule, s.drift_mmd_permutations, s.drift_auc_threshold) == ("any", 99, 0.6)
    bad = {
        "drift_rule": ("most", "drift_rule must be one of"),
        "drift_auc_threshold": (0.4, "Got 0.4"),
        "drift_mmd_p_value": (1.5, "Got 1.5"),
        "drift_mmd_permutations": (19, "Got 19 permutations for p < 0.05"),  # 1/20 is not < 0.05
        "drift_centroid_threshold": (0.0, "Got 0.0"),
        "drift_min_sample": (3, "Got 3"),
        "drift_reference_size": (20, "Got 20 < 30"),
    }
    for name, (value, message) in bad.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            Settings(data_dir=tmp_path, **{"drift_min_sample": 30, name: value})


# ------------------------------------------------------------------------------ the real model
TOPIC_A = [  # cooking
    "Simmer the tomato sauce for twenty minutes before adding fresh basil.",
    "Knead the bread dough until it is smooth and elastic.",
    "Sear the steak in a hot cast iron pan with a little butter.",
    "Whisk the eggs with sugar until the mixture turns pale.",
    "Roast the vegetables at 200 degrees with olive oil and salt.",
    "Let the pizza dough rise overnight in the fridge.",
    "Fold the whipped cream gently into the chocolate mousse.",
    "Season the soup with pepper, thyme and a bay leaf.",
    "Caramelise the onions slowly over a low flame.",
    "Blanch the green beans and plunge them into ice water.",
    "Marinate the chicken in yoghurt, garlic and lemon juice.",
    "Bake the apple pie until the crust is golden brown.",
    "Grate parmesan over the risotto just before serving.",
    "Toast the spices in a dry pan to release their aroma.",
    "Deglaze the pan with white wine and scrape up the bits.",
    "Rest the roast for ten minutes before carving it.",
    "Chop the parsley finely and sprinkle it over the pasta.",
    "Poach the pears in red wine with cinnamon and cloves.",
    "Cream the butter and sugar for a light sponge cake.",
    "Steam the dumplings for eight minutes in a bamboo basket.",
    "Reduce the stock until it coats the back of a spoon.",
    "Brine the turkey overnight so the meat stays juicy.",
    "Add a pinch of salt to the caramel to balance the sweetness.",
    "Slice the cucumbers thinly for a quick pickle.",
]
TOPIC_B = [  # astronomy
    "The telescope resolved two faint galaxies behind the cluster.",
    "A supernova in the spiral arm outshone its entire galaxy.",
    "Jupiter's moons were first observed by Galileo in 1610.",
    "The probe measured the magnetic field near Saturn's rings.",
    "Neutron stars spin hundreds of times per second.",
    "The comet's tail always points away from the Sun.",
    "Astronomers detected an exoplanet by the dip in its star's light.",
    "The Andromeda galaxy is approaching the Milky Way.",
    "A black hole's event horizon lets no light escape.",
    "The lunar eclipse turned the Moon a deep red.",
    "Radio telescopes map cold hydrogen gas between the stars.",
    "Mars has the tallest volcano in the solar system.",
    "The cosmic microwave background is the afterglow of the Big Bang.",
    "A white dwarf is the dense remnant of a Sun-like star.",
    "The rover drilled into rock on the floor of the crater.",
    "Meteor showers happen when Earth crosses a comet's debris trail.",
]


def test_real_model_topic_a_vs_a_is_not_drift_and_a_vs_b_is(tmp_path):
    from rag_ops.embed import make_embedder

    # 12 vectors a side is far below the default drift_min_sample (50): at this size the null
    # spread of the classifier's AUC and of the centroid distance is wide (12 sentences of one
    # topic vs 12 others: AUC 0.60, centroid 0.17), so the verdict here is the permutation test's,
    # the only one whose false-positive rate does not depend on the sample size.
    settings = Settings(data_dir=tmp_path, drift_min_sample=10, drift_rule="mmd")
    vectors = make_embedder(settings).encode(TOPIC_A + TOPIC_B)  # 40 encodes
    a, b = vectors[: len(TOPIC_A)], vectors[len(TOPIC_A) :]
    order = np.random.default_rng(0).permutation(len(a))
    a1, a2 = a[order[:12]], a[order[12:]]
    same = detect_drift(a1, a2, settings=settings, seed=0)
    other = detect_drift(a1, b, settings=settings, seed=0)
    assert same.sufficient and not same.drifted and same.p_value > 0.2, same.reasons
    assert other.drifted and other.verdicts == {"classifier": True, "mmd": True, "centroid": True}, other.reasons
    assert other.auc > 0.95 and other.p_value < 0.01
    assert other.centroid_distance > 3 * same.centroid_distance


# ------------------------------------------------------------------------------ catalog
@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request, tmp_path):
    url = f"sqlite:///{tmp_path}/cat.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    cat = Catalog(url)
    cat.migrate()
    yield cat
    cat.close()


def test_drift_reports_round_trip(catalog, settings):
    rng = np.random.default_rng(1)
    drifted = detect_drift(sample(rng, 100), sample(rng, 60, shift=0.3), settings=settings)
    small = detect_drift(sample(rng, 100), sample(rng, 5), settings=settings)
    first = catalog.write_drift_report("run1", "ragops", "chroma", "m", drifted.as_dict())
    catalog.write_drift_report("run2", "ragops", "milvus", "m", small.as_dict())
    catalog.write_drift_report("run3", "other", "milvus", "m", small.as_dict())
    rows = catalog.drift_reports(limit=10)
    assert [r["run_id"] for r in rows] == ["run1", "run2", "run3"]  # oldest first
    r1, r2 = rows[0], rows[1]
    assert r1["report_id"] == first and r1["drifted"] is True and r1["store"] == "chroma"
    assert (r1["reference_size"], r1["batch_size"], r1["rule"]) == (100, 60, settings.drift_rule)
    assert r1["auc"] == pytest.approx(drifted.auc) and r1["p_value"] == pytest.approx(drifted.p_value)
    assert r1["mmd2"] == pytest.approx(drifted.mmd2)
    assert r1["centroid_distance"] == pytest.approx(drifted.centroid_distance)
    assert r1["reasons"] == drifted.reasons
    assert r2["drifted"] is False and r2["auc"] is None and r2["reasons"][0].startswith("insufficient sample")
    assert [r["run_id"] for r in catalog.drift_reports(limit=2)] == ["run2", "run3"]
    assert [r["run_id"] for r in catalog.drift_reports(collection="other")] == ["run3"]
    # the same run, collection, store and model again: overwritten, not duplicated
    catalog.write_drift_report("run1", "ragops", "chroma", "m", {**drifted.as_dict(), "drifted": False})
    rows = catalog.drift_reports(limit=10)
    assert len(rows) == 3 and rows[-1]["run_id"] == "run1" and rows[-1]["drifted"] is False


def test_drift_report_missing_key_is_a_catalog_error(catalog):
    from rag_ops.errors import CatalogError

    with pytest.raises(CatalogError, match="lacks 'rule'"):
        catalog.write_drift_report("r", "c", "s", "m", {"reference_size": 1, "batch_size": 1, "drifted": 0, "reasons": []})


def test_reference_lives_in_the_catalog_so_every_worker_checks_against_the_same_one(tmp_path, corpus, pg_url):
    """Two hosts (own data dirs) sharing a PostgreSQL catalog: the second check reads the first
    one's reference (same vectors, same time), and an earlier release's .npz file is moved in."""
    from rag_ops.drift import ensure_reference
    from rag_ops.pipeline import ingest

    host_a = Settings(data_dir=tmp_path / "a", source=str(corpus), catalog_url=pg_url, stores=("milvus",))
    ingest(host_a)
    cat = Catalog(pg_url)
    try:
        row = cat.live_versions("ragops")["milvus"]
        first, taken = ensure_reference(host_a, cat, row)
        assert len(first) > 0 and cat.versions("ragops", "milvus")[0]["reference_path"] == "catalog"
        assert not list((tmp_path / "a").rglob("*.npz"))  # nothing left on the host's disk
        host_b = host_a.replace(data_dir=tmp_path / "b")
        again, taken_again = ensure_reference(host_b, cat, cat.live_versions("ragops")["milvus"])
        assert taken_again == taken and np.array_equal(again, first)
        # a reference an earlier release kept as a file is read once and kept in the catalog
        old = tmp_path / "old_reference.npz"
        np.savez(old, vectors=first[:3], taken_at=np.array("2026-01-01T00:00:00Z"))
        cat.update_version("ragops", "milvus", row["version"], reference_path=str(old))
        with cat.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM drift_references"))
        moved, when = ensure_reference(host_b, cat, cat.live_versions("ragops")["milvus"])
        assert when == "2026-01-01T00:00:00Z" and np.array_equal(moved, first[:3])
        assert cat.reference("ragops", "milvus", row["version"])[1] == when
    finally:
        cat.close()
