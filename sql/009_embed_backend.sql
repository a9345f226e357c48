-- ragops catalog, version 9: the encode backend an index version was built with (torch fp32,
-- torch bf16, ONNX Runtime fp32 or int8). Vectors of two backends differ slightly, so a version is
-- written with its own backend and a change is config drift. Earlier versions were all torch fp32.

ALTER TABLE index_versions ADD COLUMN embed_backend VARCHAR(32) NOT NULL DEFAULT 'torch';
