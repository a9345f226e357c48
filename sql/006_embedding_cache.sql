-- ragops catalog, version 6: the shared embedding cache. SQLite and PostgreSQL.
-- With a server catalog (PostgreSQL) every Airflow worker and every new pod reads and writes the
-- same cache, so a chunk encoded anywhere is never encoded again (setting embedding_cache).
-- Vectors are float32 bytes (numpy tobytes, little-endian); BYTEA stores bytes on both dialects.

CREATE TABLE embedding_cache (
    model_id   VARCHAR(255) NOT NULL,   -- Settings.model_id: the model the vector came from
    text_hash  VARCHAR(64)  NOT NULL,   -- sha256 of the chunk text
    dim        INTEGER      NOT NULL,
    vector     BYTEA        NOT NULL,
    PRIMARY KEY (model_id, text_hash)
);
