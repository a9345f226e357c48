-- ragops catalog, version 4: embedding drift reports. Runs on SQLite and PostgreSQL.
-- One row per drift check (run, collection, store or index, model); written from rag_ops.drift's
-- DriftReport by Catalog.write_drift_report. Test values are NULL when the sample was insufficient.

CREATE TABLE drift_reports (
    report_id         VARCHAR(64)      PRIMARY KEY,   -- hash of (run, collection, store, model)
    run_id            VARCHAR(128)     NOT NULL,      -- e.g. cli__20250101T000000Z or an Airflow run id
    collection        VARCHAR(64)      NOT NULL,      -- the collection whose vectors are the reference
    store             VARCHAR(255)     NOT NULL,      -- chroma | milvus | an index version name
    model_id          VARCHAR(255)     NOT NULL,      -- embedding model of both samples
    reference_size    INTEGER          NOT NULL,      -- vectors in the reference sample
    batch_size        INTEGER          NOT NULL,      -- vectors in the new batch
    auc               DOUBLE PRECISION,               -- domain-classifier ROC AUC (out-of-fold)
    mmd2              DOUBLE PRECISION,               -- unbiased MMD^2, RBF kernel, median bandwidth
    p_value           DOUBLE PRECISION,               -- MMD permutation p-value, in (0, 1]
    centroid_distance DOUBLE PRECISION,               -- 1 - cos(mean(ref), mean(new))
    drifted           INTEGER          NOT NULL,      -- 1 when the rule says drift, else 0
    rule              VARCHAR(32)      NOT NULL,      -- any | majority | all | a test name
    reasons           TEXT             NOT NULL,      -- JSON list of readable lines
    created_at        VARCHAR(32)      NOT NULL
);

CREATE INDEX drift_reports_series ON drift_reports (collection, created_at);
