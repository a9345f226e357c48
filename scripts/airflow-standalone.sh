#!/usr/bin/env bash
# `make airflow`: Airflow 3 standalone (scheduler, dag-processor, API server + UI, triggerer)
# with the ragops DAGs. Every setting below can be overridden from the environment.
#
# Metadata DB: PostgreSQL when one answers (backfills need it under concurrent access), else a
# SQLite file with a warning. Default URL: postgresql+psycopg://postgres@127.0.0.1:5432/ragops_airflow
# (the database is created if missing). Set RAGOPS_AIRFLOW_DB_URL to use another one.
# Login: user `admin`; the password is in $AIRFLOW_HOME/passwords.json (generated on first start).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV_BIN="${VENV_BIN:-$ROOT/.venv/bin}"
export PATH="$VENV_BIN:$PATH"   # standalone starts its components as `airflow ...`

export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.airflow/standalone}"
export RAGOPS_DATA_DIR="${RAGOPS_DATA_DIR:-$ROOT/.data/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$ROOT/plugins}"   # the ragops page in the UI
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export AIRFLOW__CORE__EXECUTOR="${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}"
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"   # LocalExecutor forks this many workers up front
export AIRFLOW__CORE__AUTH_MANAGER="${AIRFLOW__CORE__AUTH_MANAGER:-airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$AIRFLOW_HOME/passwords.json}"
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"
export AIRFLOW__API__PORT="${AIRFLOW__API__PORT:-8080}"
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://$AIRFLOW__API__HOST:$AIRFLOW__API__PORT}"
# privacy: no telemetry (Airflow 3.3 ships none; the variable is honoured by older releases)
export AIRFLOW__USAGE_DATA_COLLECTION__ENABLED=False
mkdir -p "$AIRFLOW_HOME" "$RAGOPS_DATA_DIR"

if [ -z "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}" ]; then
  PG_URL="${RAGOPS_AIRFLOW_DB_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/ragops_airflow}"
  if "$VENV_BIN/python" "$ROOT/scripts/ensure_pg_database.py" "$PG_URL"; then
    export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$PG_URL"
    echo "airflow: metadata DB on PostgreSQL ($("$VENV_BIN/python" -c 'import sys,sqlalchemy as sa; print(sa.engine.make_url(sys.argv[1]).render_as_string(hide_password=True))' "$PG_URL"))"
  else
    export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
    echo "airflow: WARNING no PostgreSQL answered; using SQLite ($AIRFLOW_HOME/airflow.db)." >&2
    echo "airflow: backfills under concurrent access need PostgreSQL: set RAGOPS_AIRFLOW_DB_URL." >&2
  fi
fi

PW_FILE="$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
if [ ! -s "$PW_FILE" ]; then
  umask 077
  "$VENV_BIN/python" -c 'import json,secrets,sys; json.dump({"admin": secrets.token_urlsafe(12)}, open(sys.argv[1], "w"))' "$PW_FILE"
fi

airflow db migrate >/dev/null
echo "airflow: UI and REST API on $AIRFLOW__API__BASE_URL — login 'admin', password in $PW_FILE"
echo "airflow: ragops data dir $RAGOPS_DATA_DIR; DAGs from $AIRFLOW__CORE__DAGS_FOLDER (new DAGs start paused)"
exec airflow standalone
