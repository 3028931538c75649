"""A LangChain ``BaseRetriever`` over ServeWise search, so it composes with LCEL.

The core never sees LangChain types: this adapter converts results at the boundary::

    from assistant.integrations.langchain import ServeWiseRetriever
    retriever = ServeWiseRetriever.from_config(settings, k=4, source_types=["criterion"])
    chain = retriever | format_docs | prompt | llm
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from assistant.config import Settings
from assistant.errors import BackendMissingError
from assistant.retriever import Query
from assistant.search import Searcher

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as exc:  # pragma: no cover - langchain-core is a core dependency
    raise BackendMissingError("The LangChain adapter", "langchain-core") from exc


class ServeWiseRetriever(BaseRetriever):
    """Hybrid retrieval + reranking as LangChain ``Document`` objects."""

    searcher: Any
    k: int = 5
    source_types: list[str] = Field(default_factory=list)
    platforms: list[str] = Field(default_factory=list)

    @classmethod
    def from_config(cls, settings: Settings, **kwargs: Any) -> ServeWiseRetriever:
        """Open the index in ``settings.data_dir``."""
        return cls(searcher=Searcher.from_config(settings), **kwargs)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        parsed = Query.parse(query, self.source_types, self.platforms)
        result = self.searcher(parsed, self.k)
        return [
            Document(
                page_content=hit.chunk.text,
                id=hit.chunk.id,
                metadata={k: v for k, v in hit.as_dict().items() if k not in ("text", "id")},
            )
            for hit in result.hits
        ]
