-- ragops catalog, version 2: quarantine and quality results. Runs on SQLite and PostgreSQL.

CREATE TABLE quarantine (
    doc_id        VARCHAR(64)  PRIMARY KEY,
    uri           TEXT         NOT NULL,
    stage         VARCHAR(16)  NOT NULL,   -- list | read | parse | clean | chunk | embed | quality | upsert
    reason        TEXT         NOT NULL,   -- what a person reads: why this document is not indexed
    content_hash  VARCHAR(64),             -- bytes that failed (retried only when they change)
    first_seen    VARCHAR(32)  NOT NULL,
    last_seen     VARCHAR(32)  NOT NULL,
    last_run_id   VARCHAR(128)
);

CREATE TABLE quality_results (
    result_id        VARCHAR(64)  PRIMARY KEY,   -- hash of (run, suite, expectation, column)
    run_id           VARCHAR(128) NOT NULL,
    suite            VARCHAR(32)  NOT NULL,      -- documents | chunks | embeddings | gate
    expectation      VARCHAR(128) NOT NULL,
    column_name      VARCHAR(64),
    success          INTEGER      NOT NULL,      -- 1 passed, 0 failed
    observed_value   TEXT,
    unexpected_count INTEGER      NOT NULL DEFAULT 0,
    created_at       VARCHAR(32)  NOT NULL
);

CREATE INDEX quality_results_run ON quality_results (run_id);
