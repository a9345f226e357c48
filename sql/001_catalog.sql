-- ragops catalog, version 1. Runs unchanged on SQLite and PostgreSQL.
-- Never edit a file once applied: add 002_*.sql instead.

CREATE TABLE documents (
    doc_id        VARCHAR(64)  PRIMARY KEY,          -- sha256(source uri)[:32]
    uri           TEXT         NOT NULL,
    content_hash  VARCHAR(64),                        -- sha256 of the bytes last indexed
    size_bytes    BIGINT,
    modified_at   DOUBLE PRECISION,                   -- source mtime / LastModified, epoch seconds
    etag          VARCHAR(128),
    status        VARCHAR(16)  NOT NULL,              -- indexed | failed | deleted
    error         TEXT,                               -- why the last attempt failed
    error_stage   VARCHAR(16),                        -- list | read | parse | clean | chunk | embed
    error_hash    VARCHAR(64),                        -- content hash of the bytes that failed
    chunk_count   INTEGER      NOT NULL DEFAULT 0,
    stores        VARCHAR(255),                       -- stores holding this content, e.g. chroma,milvus
    last_run_id   VARCHAR(128),
    updated_at    VARCHAR(32)  NOT NULL
);

CREATE INDEX documents_status ON documents (status);

CREATE TABLE chunks (
    chunk_id   VARCHAR(64) PRIMARY KEY,               -- hash(doc id, seq, chunker settings, text)
    doc_id     VARCHAR(64) NOT NULL,
    seq        INTEGER     NOT NULL,
    text_hash  VARCHAR(64) NOT NULL,                  -- sha256 of the chunk text (cache key)
    tokens     INTEGER     NOT NULL
);

CREATE INDEX chunks_doc_id ON chunks (doc_id);

CREATE TABLE runs (
    run_id       VARCHAR(128) PRIMARY KEY,
    started_at   VARCHAR(32)  NOT NULL,
    finished_at  VARCHAR(32),
    status       VARCHAR(16)  NOT NULL,               -- running | success | failed
    source       TEXT,
    full_sync    INTEGER      NOT NULL DEFAULT 0,
    seen         INTEGER      NOT NULL DEFAULT 0,
    new          INTEGER      NOT NULL DEFAULT 0,
    changed      INTEGER      NOT NULL DEFAULT 0,
    unchanged    INTEGER      NOT NULL DEFAULT 0,
    deleted      INTEGER      NOT NULL DEFAULT 0,
    failed       INTEGER      NOT NULL DEFAULT 0,
    chunks       INTEGER      NOT NULL DEFAULT 0,
    encoded      INTEGER      NOT NULL DEFAULT 0,
    cache_hits   INTEGER      NOT NULL DEFAULT 0,
    report       TEXT                                 -- the full JSON report
);
