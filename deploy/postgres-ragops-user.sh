#!/bin/bash
# docker-compose: the ragops catalog's own user, owner of database ragops.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname ragops <<-SQL
  CREATE USER ragops WITH PASSWORD 'ragops';
  ALTER DATABASE ragops OWNER TO ragops;
  GRANT ALL ON SCHEMA public TO ragops;
SQL
