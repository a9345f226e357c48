"""Exit 0 if the PostgreSQL server of URL answers, creating URL's database when missing; else 1.

Used by ``make airflow`` to choose between PostgreSQL and SQLite for Airflow's metadata DB.
Prints nothing secret.
"""

import sys

import sqlalchemy as sa


def main(url: str) -> int:
    target = sa.engine.make_url(url)
    admin = target.set(database="postgres")
    try:
        eng = sa.create_engine(admin, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": target.database}).first()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
        eng.dispose()
        return 0
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable server
        print(f"PostgreSQL not usable: {type(exc).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
