"""ragops: the operations layer that keeps RAG indexes fresh, correct and cheap.

The library decides *what* (discover, parse, clean, chunk, embed, upsert, prune); Airflow decides
*when* and *where*. Nothing here imports Airflow except :mod:`rag_ops.airflow`.
"""

__version__ = "0.1.0"
