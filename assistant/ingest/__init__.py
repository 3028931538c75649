"""Ingestion: loaders, redaction and the incremental indexer."""
