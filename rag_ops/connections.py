"""Airflow connections as settings: the catalog, the Chroma and Milvus servers, S3.

In Airflow, credentials belong in connections (any secrets backend can serve them). The adapter
(:mod:`rag_ops.airflow`) fetches the connections named by the ``*_conn_id`` settings and this
module maps their fields onto settings; it imports no Airflow (a connection arrives as a
:class:`ConnectionInfo`). Precedence, lowest first: the embedded defaults, a connection, a
``RAGOPS_*`` variable, a DAG run's params: a variable set explicitly always wins.

==================  ==========================================================================
connection (id)     fields read
==================  ==========================================================================
``ragops_catalog``  type ``postgres``: host, port, login, password, schema (the database) ->
                    ``catalog_url`` (``postgresql+psycopg://…``); or extra ``{"url": "…"}``
``chroma_default``  host, port -> ``chroma_host``/``chroma_port``; password -> ``chroma_token``;
                    extra ``{"ssl": true}`` (or an ``https://`` host) -> ``chroma_ssl``
``milvus_default``  extra ``{"uri": "…"}`` or host + port (19530) -> ``milvus_uri``; password
                    (``login:password`` when there is a login) or extra ``token`` -> ``milvus_token``
``aws_default``     login, password -> ``s3_access_key_id``/``s3_secret_access_key``; extra
                    ``endpoint_url`` and ``region_name`` -> ``s3_endpoint_url``/``s3_region``
==================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from rag_ops.config import Secret


@dataclass(frozen=True)
class ConnectionInfo:
    """The fields of an Airflow connection that ragops reads (the password stays a Secret)."""

    conn_type: str = ""
    host: str = ""
    port: int | None = None
    login: str = ""
    password: Secret = Secret("")
    schema: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def catalog_from(conn: ConnectionInfo) -> dict[str, Any]:
    if conn.extra.get("url"):
        return {"catalog_url": Secret(str(conn.extra["url"]))}
    if conn.conn_type.lower() not in ("postgres", "postgresql") or not conn.host:
        return {}
    import sqlalchemy as sa

    url = sa.engine.URL.create(
        "postgresql+psycopg", username=conn.login or None, password=conn.password.reveal() or None,
        host=conn.host, port=conn.port, database=conn.schema or None,
    )
    return {"catalog_url": Secret(url.render_as_string(hide_password=False))}


def chroma_from(conn: ConnectionInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    host = conn.host
    if host.startswith(("http://", "https://")):
        out["chroma_ssl"] = host.startswith("https://")
        host = host.split("://", 1)[1].rstrip("/")
    if not host:
        return {}
    out["chroma_host"] = host
    if conn.port:
        out["chroma_port"] = int(conn.port)
    if "ssl" in conn.extra:
        out["chroma_ssl"] = str(conn.extra["ssl"]).lower() in ("1", "true", "yes")
    if conn.password:
        out["chroma_token"] = conn.password
    return out


def milvus_from(conn: ConnectionInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    uri = str(conn.extra.get("uri") or "")
    if not uri and conn.host:
        uri = conn.host if "://" in conn.host else f"http://{conn.host}:{conn.port or 19530}"
    if not uri:
        return {}
    out["milvus_uri"] = Secret(uri)
    token = str(conn.extra.get("token") or "")
    if conn.password:
        token = f"{conn.login}:{conn.password.reveal()}" if conn.login else conn.password.reveal()
    if token:
        out["milvus_token"] = Secret(token)
    return out


def aws_from(conn: ConnectionInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if conn.login:
        out["s3_access_key_id"] = conn.login
        out["s3_secret_access_key"] = conn.password
    endpoint = conn.extra.get("endpoint_url") or (conn.extra.get("service_config") or {}).get("s3", {}).get("endpoint_url")
    if endpoint:
        out["s3_endpoint_url"] = str(endpoint)
    if conn.extra.get("region_name"):
        out["s3_region"] = str(conn.extra["region_name"])
    return out


# setting naming the connection id -> how its fields become settings
MAPPINGS: dict[str, Callable[[ConnectionInfo], dict[str, Any]]] = {
    "catalog_conn_id": catalog_from,
    "chroma_conn_id": chroma_from,
    "milvus_conn_id": milvus_from,
    "aws_conn_id": aws_from,
}


def settings_from_connections(conn_ids: dict[str, str], fetch: Callable[[str], ConnectionInfo | None]) -> dict[str, Any]:
    """Settings values from the connections that exist.

    Args:
        conn_ids: ``catalog_conn_id`` etc. -> the connection id to read ("" reads none).
        fetch: connection id -> its fields, or None when no such connection is defined.

    Returns:
        setting name -> value (only what the existing connections say).
    """
    values: dict[str, Any] = {}
    for setting, mapping in MAPPINGS.items():
        conn_id = conn_ids.get(setting, "")
        if not conn_id:
            continue
        conn = fetch(conn_id)
        if conn is not None:
            values.update(mapping(conn))
    return values
