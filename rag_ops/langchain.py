"""LangChain's own vector stores bound to the live index version, with the right embeddings.

    from rag_ops.langchain import vector_store
    vs = vector_store(store="milvus")          # or "chroma"; settings from RAGOPS_* by default
    vs.similarity_search("how do I swap the battery?", k=4)

* **Milvus**: ``langchain_milvus.Milvus`` on the index's *alias* (named after the index): it
  follows every swap by itself.
* **Chroma** has no alias: ``langchain_chroma.Chroma`` is bound to the collection that is live
  when you call this. Call it again after a swap (``ragops versions`` shows the live one), e.g.
  once per request or when your app reloads.

The embedding function is the live version's model (not whatever the settings name now: a
model change only reaches readers with the swap). Needs ``langchain-chroma`` /
``langchain-milvus``, which the pinned requirements include.
"""

from __future__ import annotations

from typing import Any

from rag_ops.config import Settings, load_settings


def embeddings(settings: Settings | None = None, store: str | None = None) -> Any:
    """A LangChain ``Embeddings`` over the model of the live version of ``store`` (normalised vectors)."""
    from langchain_core.embeddings import Embeddings

    from rag_ops.embed import make_embedder
    from rag_ops.versions import serving_settings

    settings = settings or load_settings()
    embedder = make_embedder(serving_settings(settings, store))

    class RagopsEmbeddings(Embeddings):
        model_id = embedder.model_id

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return embedder.encode(list(texts)).tolist()

        def embed_query(self, text: str) -> list[float]:
            return embedder.encode([text])[0].tolist()

    return RagopsEmbeddings()


def vector_store(settings: Settings | None = None, store: str = "chroma", embedding: Any = None) -> Any:
    """LangChain's Chroma or Milvus vector store reading the live version of ``settings.collection``."""
    from rag_ops.stores import open_store
    from rag_ops.versions import live_collection

    settings = settings or load_settings()
    embedding = embedding or embeddings(settings, store)
    if store == "chroma":
        from langchain_chroma import Chroma

        client = open_store("chroma", settings).client  # same client settings (telemetry off)
        return Chroma(collection_name=live_collection(settings, "chroma"), client=client, embedding_function=embedding)
    if store == "milvus":
        from langchain_milvus import Milvus

        args = {"uri": settings.milvus_target}
        if settings.milvus_token.reveal():
            args["token"] = settings.milvus_token.reveal()
        return Milvus(
            embedding_function=embedding, collection_name=settings.collection, connection_args=args,
            primary_field="id", text_field="text", vector_field="vector",
        )
    from rag_ops.errors import ConfigError

    raise ConfigError(f"unknown store {store!r}; known: chroma, milvus")
