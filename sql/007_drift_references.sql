-- ragops catalog, version 7: each live version's drift reference sample, in the catalog's database
-- (was a .npz file in one machine's data dir): the nightly drift check compares against the same
-- reference on whichever worker it runs. Vectors are float32 bytes, n rows of dim values.

CREATE TABLE drift_references (
    index_name  VARCHAR(64)  NOT NULL,
    store       VARCHAR(16)  NOT NULL,
    version     INTEGER      NOT NULL,
    taken_at    VARCHAR(32)  NOT NULL,   -- chunks indexed after this are the next checks' "new batch"
    n           INTEGER      NOT NULL,
    dim         INTEGER      NOT NULL,
    vectors     BYTEA        NOT NULL,
    PRIMARY KEY (index_name, store, version)
);
