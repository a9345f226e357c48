-- docker-compose: one PostgreSQL for Airflow's metadata (database airflow, from POSTGRES_DB)
-- and the ragops catalog (database ragops).
CREATE DATABASE ragops;
