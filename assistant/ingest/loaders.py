"""Pick a loader by file type, after the checks that keep bad input out of the index."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from assistant.config import IngestSettings
from assistant.errors import SkipSource
from assistant.ingest import k8s, text
from assistant.types import Passage

PROSE = {
    ".md": text.load_markdown,
    ".markdown": text.load_markdown,
    ".txt": text.load_text,
    ".text": text.load_text,
    ".html": text.load_html,
    ".htm": text.load_html,
}
YAML = {".yaml", ".yml", ".json"}
SUPPORTED = frozenset(PROSE) | YAML


@dataclass(slots=True)
class Loaded:
    """Passages from one file, plus objects inside it that were skipped (with reasons)."""

    passages: list[Passage] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def is_supported(path: Path) -> bool:
    """Whether a file's type has a loader (by suffix)."""
    return path.suffix.lower() in SUPPORTED


def decode(data: bytes, limit: int) -> str:
    """Bytes -> text, refusing oversized, binary and non-UTF-8 content."""
    if len(data) > limit:
        raise SkipSource(f"file is {len(data):,} bytes, over the {limit:,}-byte limit")
    if b"\0" in data[:8192]:
        raise SkipSource("binary file (contains NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipSource(f"not UTF-8 text (bad byte at offset {exc.start})") from exc


def load(path: Path, source: str, data: bytes, settings: IngestSettings) -> Loaded:
    """Turn one file's bytes into passages; raises :class:`SkipSource` with the reason."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise SkipSource(f"unsupported file type '{suffix or path.name}'")
    content = decode(data, settings.max_file_bytes)
    if not content.strip():
        raise SkipSource("empty file")
    if suffix in YAML:
        result = k8s.load_manifests(content, source, settings.max_yaml_aliases, settings.max_yaml_documents)
        loaded = Loaded(result.passages, result.skipped)
    else:
        loaded = Loaded(PROSE[suffix](content, source, settings.max_section_chars))
    if not loaded.passages and not loaded.skipped:
        raise SkipSource("no indexable text")
    return loaded
