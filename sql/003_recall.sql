-- ragops catalog, version 3: retrieval recall scores. Runs on SQLite and PostgreSQL.
-- One row per (run, store, golden set, collection, metric); written by rag_ops.evaluate.

CREATE TABLE recall_scores (
    score_id     VARCHAR(64)      PRIMARY KEY,   -- hash of (run, collection, store, golden set, metric)
    run_id       VARCHAR(128)     NOT NULL,      -- e.g. cli__20250101T000000Z or an Airflow run id
    collection   VARCHAR(64)      NOT NULL,      -- the collection scored (e.g. ragops, beir_scifact)
    store        VARCHAR(16)      NOT NULL,      -- chroma | milvus
    golden_set   VARCHAR(128)     NOT NULL,      -- BEIR set name, or synthetic@v<version>
    model_id     VARCHAR(255)     NOT NULL,      -- embedding model of the queries
    metric       VARCHAR(32)      NOT NULL,      -- recall@10, ndcg@10, mrr@10, hit@5, queries, ...
    value        DOUBLE PRECISION NOT NULL,      -- fraction in [0, 1] (a count for "queries")
    created_at   VARCHAR(32)      NOT NULL
);

CREATE INDEX recall_scores_collection ON recall_scores (collection);

CREATE INDEX recall_scores_series ON recall_scores (store, golden_set, metric, created_at);
