#!/bin/bash
# docker-compose: the ragops catalog's own user, owner of database ragops. Its password comes from
# RAGOPS_DB_PASSWORD (required by docker-compose.yaml; there is no default).
set -euo pipefail
: "${RAGOPS_DB_PASSWORD:?RAGOPS_DB_PASSWORD must be set}"
psql -v ON_ERROR_STOP=1 -v pw="$RAGOPS_DB_PASSWORD" --username "$POSTGRES_USER" --dbname ragops <<-'SQL'
  CREATE USER ragops WITH PASSWORD :'pw';
  ALTER DATABASE ragops OWNER TO ragops;
  GRANT ALL ON SCHEMA public TO ragops;
SQL
