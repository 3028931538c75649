"""Incremental ingestion: content-hashed, batched, and safe to kill.

An unchanged tree costs a hash per file and opens neither the model nor the vector store. A
changed file's chunks are replaced; a deleted file's chunks go; a file that became unreadable
keeps its previously indexed version (and is reported).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from assistant.config import IngestSettings, Settings
from assistant.embedder import Embedder, SentenceTransformerEmbedder
from assistant.errors import SkipSource
from assistant.index import Index, Manifest, SourceRecord
from assistant.ingest import loaders
from assistant.types import Chunk

#: Bump when loaders change what they produce, so every source is re-read once.
LOADER_VERSION = "2"


@dataclass
class FileResult:
    """The outcome for one source file."""

    source: str
    status: str  # added | changed | unchanged | removed | skipped
    reason: str = ""
    chunks: int = 0
    objects: list[str] = field(default_factory=list)
    skipped_objects: list[str] = field(default_factory=list)


@dataclass
class IngestReport:
    """What an ingest run did."""

    files: list[FileResult] = field(default_factory=list)
    embedded: int = 0
    total_chunks: int = 0
    seconds: float = 0.0

    def count(self, status: str) -> int:
        """Number of files with a status."""
        return sum(1 for f in self.files if f.status == status)

    def summary(self) -> str:
        """One line a person reads at the end of a run."""
        rate = f", {self.embedded / self.seconds:.0f} chunks/s" if self.embedded and self.seconds else ""
        parts = [f"{self.count(s)} {s}" for s in ("added", "changed", "unchanged", "removed", "skipped")]
        return (
            f"{len(self.files)} files: {', '.join(parts)}; {self.embedded} chunks embedded, "
            f"{self.total_chunks} in the index; {self.seconds:.2f} s{rate}"
        )


@dataclass
class _Pending:
    key: str
    record: SourceRecord
    chunks: list[Chunk]
    result: FileResult


def display_path(path: Path) -> str:
    """Path shown to users: relative to the working directory when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def discover(paths: Iterable[str | Path]) -> Iterator[tuple[Path, str | None]]:
    """Yield (file, None) for candidate files, or (path, reason) for paths that cannot be read."""
    for raw in paths:
        path = Path(raw).absolute()
        if path.is_file():
            yield path, None
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name, None
        else:
            yield path, "no such file or directory"


class Ingestor:
    """``Ingestor(paths)`` brings the index up to date with the given files and folders."""

    def __init__(self, index: Index, embedder: Embedder, settings: IngestSettings) -> None:
        self.index = index
        self.embedder = embedder
        self.settings = settings

    @classmethod
    def from_config(cls, settings: Settings, embedder: Embedder | None = None) -> Ingestor:
        """Build the ingestor and the index it writes to from settings."""
        embedder = embedder or SentenceTransformerEmbedder.from_config(settings.embedder)
        return cls(Index.from_config(settings, embedder), embedder, settings.ingest)

    def __call__(self, paths: Iterable[str | Path]) -> IngestReport:
        started = time.perf_counter()
        paths = list(paths)
        report = IngestReport()
        manifest = self.index.manifest
        force = bool(manifest.sources) and manifest.embedder != self.embedder.name
        pending, seen = self._scan(paths, manifest, report, force)
        removed = self._removed(paths, manifest, seen, report)
        if pending or removed:
            self._write(manifest, pending, removed, report)
        report.total_chunks = len(self.index.manifest.chunk_ids())
        report.seconds = time.perf_counter() - started
        return report

    # -- scanning -------------------------------------------------------------------------
    def _scan(
        self, paths: list, manifest: Manifest, report: IngestReport, force: bool
    ) -> tuple[list[_Pending], set[str]]:
        pending: list[_Pending] = []
        seen: set[str] = set()
        for path, problem in discover(paths):
            key, source = str(path), display_path(path)
            seen.add(key)
            if problem:
                report.files.append(FileResult(source, "skipped", problem))
                continue
            item = self._read(path, key, source, manifest, force)
            report.files.append(item.result if isinstance(item, _Pending) else item)
            if isinstance(item, _Pending):
                pending.append(item)
        return pending, seen

    def _read(
        self, path: Path, key: str, source: str, manifest: Manifest, force: bool
    ) -> _Pending | FileResult:
        old = manifest.sources.get(key)
        try:
            data = self._bytes(path)
            digest = hashlib.sha256(LOADER_VERSION.encode() + data).hexdigest()
            if old and old.hash == digest and not force:
                return FileResult(source, "unchanged", chunks=len(old.chunks), objects=old.objects)
            loaded = loaders.load(path, source, data, self.settings)
        except SkipSource as exc:
            kept = " (the previously indexed version is kept)" if old else ""
            return FileResult(source, "skipped", f"{exc}{kept}")
        chunks = [Chunk.from_passage(p, source, digest, i) for i, p in enumerate(loaded.passages)]
        objects = [f"{c.ref} (ns {c.meta.get('namespace')})" for c in chunks if c.source_type == "manifest"]
        result = FileResult(
            source,
            "changed" if old else "added",
            chunks=len(chunks),
            objects=objects,
            skipped_objects=loaded.skipped,
        )
        return _Pending(key, SourceRecord(digest, source, [c.id for c in chunks], objects), chunks, result)

    def _bytes(self, path: Path) -> bytes:
        if not loaders.is_supported(path):
            raise SkipSource(f"unsupported file type '{path.suffix or path.name}'")
        try:
            size = path.stat().st_size
            if size > self.settings.max_file_bytes:
                raise SkipSource(
                    f"file is {size:,} bytes, over the {self.settings.max_file_bytes:,}-byte limit"
                )
            return path.read_bytes()
        except OSError as exc:
            raise SkipSource(f"cannot read: {exc.strerror}") from exc

    @staticmethod
    def _removed(paths: list, manifest: Manifest, seen: set[str], report: IngestReport) -> list[str]:
        roots = [str(Path(p).absolute()) for p in paths]
        gone = [
            key
            for key in manifest.sources
            if key not in seen and any(key == r or key.startswith(r.rstrip(os.sep) + os.sep) for r in roots)
        ]
        for key in gone:
            report.files.append(
                FileResult(manifest.sources[key].source, "removed", chunks=len(manifest.sources[key].chunks))
            )
        return gone

    # -- writing --------------------------------------------------------------------------
    def _write(
        self, manifest: Manifest, pending: list[_Pending], removed: list[str], report: IngestReport
    ) -> None:
        chunks = [c for p in pending for c in p.chunks]
        stale = [cid for p in pending if (old := manifest.sources.get(p.key)) for cid in old.chunks]
        stale += [cid for key in removed for cid in manifest.sources[key].chunks]
        with self.index.writing():
            self._embed_and_store(chunks)
            sources = dict(manifest.sources)
            for key in removed:
                sources.pop(key)
            sources.update({p.key: p.record for p in pending})
            lexical = self.index.lexical
            self.index.commit_manifest(Manifest(manifest.generation + 1, self.embedder.name, sources))
            self.index.remove_chunks(sorted(set(stale) - self.index.manifest.chunk_ids()))
            lexical.add(chunks)
            lexical.save(self.index.lexical_path, self.index.manifest.generation)
        report.embedded = len(chunks)

    def _embed_and_store(self, chunks: list[Chunk]) -> None:
        size = max(self.embedder_batch, 1)
        show = self.settings.progress and sys.stderr.isatty()
        with tqdm(
            total=len(chunks), unit="chunk", desc="embedding", disable=not show, file=sys.stderr
        ) as bar:
            for start in range(0, len(chunks), size):
                batch = chunks[start : start + size]
                encoded = self.embedder.encode([c.text for c in batch])
                self.index.store.upsert(batch, encoded.dense)
                self.index.tokens.put([(c.id, t) for c, t in zip(batch, encoded.tokens, strict=True)])
                bar.update(len(batch))

    @property
    def embedder_batch(self) -> int:
        return int(getattr(self.embedder, "batch_size", 32)) * 4
