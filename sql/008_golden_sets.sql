-- ragops catalog, version 8: the synthetic golden set kept in the catalog's database (it was only a
-- folder in one machine's data dir), so the nightly recall run scores the same queries on
-- whichever worker it runs. files: JSON object, path inside the set's folder -> text.

CREATE TABLE golden_sets (
    name      VARCHAR(128) PRIMARY KEY,   -- synthetic:<collection>
    version   INTEGER      NOT NULL,
    files     TEXT         NOT NULL,
    saved_at  VARCHAR(32)  NOT NULL
);
