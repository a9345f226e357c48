-- ragops catalog, version 5: index versions (blue/green) and the re-index lock. SQLite and PostgreSQL.
-- One row per (logical index, store, version). Readers of an index use the row whose status is
-- 'live' (Chroma has no alias: this row is its live pointer; Milvus also has an alias named after
-- the index). Written by rag_ops.versions through Catalog.*_version methods.

CREATE TABLE index_versions (
    index_name      VARCHAR(64)   NOT NULL,   -- the logical collection (setting "collection")
    store           VARCHAR(16)   NOT NULL,   -- chroma | milvus
    version         INTEGER       NOT NULL,   -- 1, 2, ... per (index_name, store)
    collection      VARCHAR(128)  NOT NULL,   -- the physical collection, <index>__v<version>
    status          VARCHAR(16)   NOT NULL,   -- building | gated | live | retired | failed
    embedding_model TEXT          NOT NULL,   -- the embedding_model setting it was built with
    model_id        VARCHAR(255)  NOT NULL,   -- model id (cache key part)
    model_hash      VARCHAR(64)   NOT NULL,   -- sha256 over the model folder's files
    chunk_size      INTEGER       NOT NULL,
    chunk_overlap   INTEGER       NOT NULL,
    chunker_hash    VARCHAR(64)   NOT NULL,   -- Settings.chunker_fingerprint
    dimension       INTEGER,                  -- vector size, once known
    reason          TEXT,                     -- why it was built (bootstrap, config drift, ...)
    state_url       TEXT,                     -- catalog URL of its document/chunk state while not live
    reference_path  TEXT,                     -- .npy sample of its vectors used by drift checks
    documents       INTEGER,
    chunks          INTEGER,
    encoded         INTEGER,                  -- chunks encoded to build it
    error           TEXT,                     -- why it failed (gate, build)
    run_id          VARCHAR(128),             -- the re-index run that built it
    created_at      VARCHAR(32)   NOT NULL,
    swapped_at      VARCHAR(32),              -- when it went live (last time)
    retired_at      VARCHAR(32),
    dropped_at      VARCHAR(32),              -- when retention dropped its physical collection
    PRIMARY KEY (index_name, store, version)
);

CREATE INDEX index_versions_status ON index_versions (index_name, store, status);

-- At most one re-index per logical index at a time: the row is the lock.
CREATE TABLE index_locks (
    index_name   VARCHAR(64)   PRIMARY KEY,
    holder       VARCHAR(255)  NOT NULL,   -- the run holding it (an Airflow run id or cli__...)
    host         VARCHAR(255),
    pid          INTEGER,
    acquired_at  VARCHAR(32)   NOT NULL,
    expires_at   VARCHAR(32)   NOT NULL    -- a stale lock (crashed holder) may be taken after this
);
