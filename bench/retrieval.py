"""Retrieval benchmark: search latency at 1k / 10k / 50k chunks, and quality on the real corpus.

1. Ingests ``corpus/`` plus ``../shared/upstream`` (when present) into a temporary data dir and
   scores recall@5 / hit@5 / MRR on ``eval/datasets/retrieval-dev.yaml`` (no filters) for each
   retrieval mode (hybrid, dense, lexical) with reranker ``none`` and ``maxsim``.
2. Grows that index to each size, smallest first, with synthetic copies of the real chunks: new
   ids; ~10% of words swapped for corpus words and ~2% for new words (BM25 postings and
   vocabulary grow); dense vector = source + N(0, 0.02), renormalised; token matrix = the
   source's stored one + noise. Written through the real stores and a committed manifest.
3. Per size and reranker: a fresh ``Searcher``, 5 warm-up queries, then ``searcher(query, 5)``
   timed over ``--queries`` queries cycling the dev set: p50/p95 of the total and of
   ``retrieve_ms`` / ``rerank_ms``. Also disk size, RSS, and a fresh ``servewise search``
   process (wall time, own peak RSS). Target: p50 <= 60 ms at 10k chunks with maxsim.

Run from the repository root (``make bench`` does)::

    .venv/bin/python bench/retrieval.py [--sizes 1000,10000,50000] [--queries 100] [--json]

It prints figures and asserts nothing. 50k chunks take several minutes and ~2.5 GB of disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, SHARED, current_rss_mib, grid, loadavg, log, make_settings, peak_rss_mib, run_cli

from assistant.config import Settings
from assistant.embedder import Embedder, SentenceTransformerEmbedder
from assistant.index import Index, Manifest, SourceRecord
from assistant.ingest.indexer import Ingestor
from assistant.retriever import Query
from assistant.search import Searcher
from assistant.types import Chunk
from eval.retrieval import RetrievalItem, evaluate, load_items

K, WARMUP, BATCH, TARGET_MS = 5, 5, 1000, 60.0
DENSE_NOISE, TOKEN_NOISE, SWAP_RATE, NOVEL_RATE, NOVEL_WORDS = 0.02, 0.02, 0.10, 0.02, 20_000
SYNTHETIC_KEY = "bench://synthetic"


@dataclasses.dataclass
class Pool:
    """The real chunks that synthetic ones copy, and the words used to perturb their texts."""

    chunks: list[Chunk]
    vectors: np.ndarray
    tokens: list[np.ndarray]  # as stored: already pooled in pairs by the token store
    words: list[str]
    novel: list[str]


def load_pool(index: Index, rng: np.random.Generator) -> Pool:
    """Read the real chunks, their dense vectors and stored token matrices."""
    chunks = index.store.get()
    ids = [c.id for c in chunks]
    vectors = np.asarray(index.store.collection.get(ids=ids, include=["embeddings"])["embeddings"])
    stored = index.tokens.get(ids)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    novel = ["".join(rng.choice(letters, rng.integers(5, 10))) for _ in range(NOVEL_WORDS)]
    words = [w for c in chunks for w in c.text.split()]
    return Pool(chunks, vectors.astype(np.float32), [stored[i] for i in ids], words, novel)


def perturb(text: str, pool: Pool, rng: np.random.Generator) -> str:
    """Swap ~10% of the words for corpus words and ~2% for new words."""
    words = text.split()
    roll = rng.random(len(words))
    for i in np.flatnonzero(roll < SWAP_RATE):
        words[i] = pool.words[rng.integers(len(pool.words))]
    for i in np.flatnonzero(roll > 1 - NOVEL_RATE):
        words[i] = pool.novel[rng.integers(len(pool.novel))]
    return " ".join(words)


def synthesize(pool: Pool, first: int, count: int, rng: np.random.Generator) -> tuple:
    """``count`` synthetic chunks numbered from ``first``: (chunks, vectors, token matrices)."""
    sources = rng.integers(len(pool.chunks), size=count)
    vectors = pool.vectors[sources] + rng.normal(0, DENSE_NOISE, (count, pool.vectors.shape[1]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks, tokens = [], []
    for n, s in enumerate(sources, first):
        src = pool.chunks[s]
        cid = hashlib.sha1(f"bench-synthetic\0{n}".encode()).hexdigest()[:20]
        text, ref = perturb(src.text, pool, rng), f"{src.ref}~syn{n}"
        chunks.append(dataclasses.replace(src, id=cid, text=text, ref=ref, source="bench/synthetic"))
        noisy = pool.tokens[s] + rng.standard_normal(pool.tokens[s].shape, dtype=np.float32) * TOKEN_NOISE
        tokens.append(np.repeat(noisy, 2, axis=0))  # TokenStore.put pools pairs back to these rows
    return chunks, vectors.astype(np.float32), tokens


def grow(settings: Settings, embedder: Embedder, pool: Pool, target: int, rng: np.random.Generator) -> int:
    """Add synthetic chunks until the index holds ``target``; returns how many were added."""
    index = Index.from_config(settings, embedder)
    old = index.manifest.sources.get(SYNTHETIC_KEY)
    added: list[Chunk] = []
    with index.writing():
        for start in range(len(index.manifest.chunk_ids()), target, BATCH):
            chunks, vectors, tokens = synthesize(pool, start, min(BATCH, target - start), rng)
            index.store.upsert(chunks, vectors)
            index.tokens.put([(c.id, t) for c, t in zip(chunks, tokens, strict=True)])
            added += chunks
        if added:
            ids = (old.chunks if old else []) + [c.id for c in added]
            record = SourceRecord(f"n{len(ids)}", "bench/synthetic", ids)
            lexical = index.lexical  # loaded at the old generation, as Ingestor does
            gen, name = index.manifest.generation + 1, index.manifest.embedder
            index.commit_manifest(Manifest(gen, name, {**index.manifest.sources, SYNTHETIC_KEY: record}))
            lexical.add(added)
            lexical.save(index.lexical_path, gen)
    return len(added)


def pct(name: str, values: list[float]) -> dict[str, float]:
    return {f"{name}_p{q}": round(float(np.percentile(values, q)), 2) for q in (50, 95)}


def measure(settings: Settings, embedder: Embedder, queries: list[str], reranker: str, n: int) -> dict:
    """Latency of ``searcher(query, 5)``: open + first query, then n timed queries after warm-up."""
    started = time.perf_counter()
    searcher = Searcher.from_config(settings, embedder, reranker=reranker)
    searcher(Query.parse(queries[0]), K)  # opens Chroma, loads and freezes BM25
    open_s = round(time.perf_counter() - started, 3)
    for q in queries[1:WARMUP]:
        searcher(Query.parse(q), K)
    total, retrieve, rerank = [], [], []
    for i in range(n):
        query = Query.parse(queries[i % len(queries)])
        t0 = time.perf_counter()
        searcher(query, K)
        total.append((time.perf_counter() - t0) * 1000)
        retrieve.append(query.timings["retrieve_ms"])
        rerank.append(query.timings.get("rerank_ms", 0.0))
    times = {**pct("total", total), **pct("retrieve", retrieve), **pct("rerank", rerank)}
    return {"reranker": reranker, "queries": n, **times, "open_s": open_s}


def quality(data_dir: Path, embedder: Embedder, items: list[RetrievalItem]) -> list[dict]:
    """recall@5 / hit@5 / MRR per retrieval mode and reranker on the real index."""
    rows = []
    for mode, reranker in itertools.product(("hybrid", "dense", "lexical"), ("none", "maxsim")):
        searcher = Searcher.from_config(make_settings(data_dir, retrieval={"mode": mode}), embedder, reranker)
        rep = evaluate(lambda q, k, s=searcher: [h.chunk.ref for h in s(Query.parse(q), k).hits], items, K)
        scores = {f"recall@{K}": rep.recall, f"hit@{K}": rep.hit, "MRR": rep.mrr}
        rows.append({"mode": mode, "reranker": reranker, **{m: round(v, 3) for m, v in scores.items()}})
    return rows


def disk_mib(path: Path) -> dict[str, float]:
    """Size on disk of the data dir and of its chroma/, tokens.sqlite* and bm25/ parts."""
    sizes = dict.fromkeys(("disk", "chroma", "tokens", "bm25"), 0.0)
    for f in (f for f in path.rglob("*") if f.is_file()):
        key = f.relative_to(path).parts[0].split(".")[0]
        for k in ("disk", key) if key in sizes else ("disk",):
            sizes[k] += f.stat().st_size / 2**20
    return {f"{k}_mib": round(v, 1) for k, v in sizes.items()}


def cli_search(data_dir: Path, query: str) -> dict[str, float]:
    """A fresh ``servewise search`` process: wall seconds (model load included) and own peak RSS."""
    wall, peak = run_cli(["--data-dir", str(data_dir), "search", query], measure_rss=True)
    return {"cli_search_s": round(wall, 2), "cli_rss_mib": peak and round(peak, 1)}


@dataclasses.dataclass
class Bench:
    """What every measurement needs."""

    settings: Settings
    embedder: Embedder
    queries: list[str]
    n_queries: int
    rng: np.random.Generator


def size_point(bench: Bench, pool: Pool, size: int) -> tuple[dict, list[dict]]:
    """Grow the index to ``size``; returns its disk/memory row and its latency rows."""
    log("retrieval", f"growing the index to {size} chunks")
    t0 = time.perf_counter()
    added = grow(bench.settings, bench.embedder, pool, size, bench.rng)
    build_s = round(time.perf_counter() - t0, 1)
    chunks = len(Index.from_config(bench.settings).manifest.chunk_ids())
    log("retrieval", f"{chunks} chunks ({added} added in {build_s} s); timing queries")
    args = (bench.settings, bench.embedder, bench.queries)
    latency = [{"chunks": chunks, **measure(*args, r, bench.n_queries)} for r in ("maxsim", "none")]
    data_dir = Path(bench.settings.data_dir)
    row = {"chunks": chunks, "added": added, "build_s": build_s, **disk_mib(data_dir)}
    row.update(rss_now_mib=current_rss_mib(), rss_peak_mib=peak_rss_mib())
    return {**row, **cli_search(data_dir, bench.queries[0])}, latency


def run(sizes: list[int], n_queries: int, seed: int) -> dict[str, Any]:
    """Ingest the real corpus, score quality, then measure each size, in a temporary data dir."""
    load_before = loadavg()
    items = load_items(ROOT / "eval" / "datasets" / "retrieval-dev.yaml")
    paths = [ROOT / "corpus"] + ([SHARED / "upstream"] if (SHARED / "upstream").is_dir() else [])
    with tempfile.TemporaryDirectory(prefix="servewise-bench-retrieval-") as tmp:
        settings = make_settings(Path(tmp) / "data")
        embedder = SentenceTransformerEmbedder.from_config(settings.embedder)
        embedder.encode(["warm up"])
        log("retrieval", "ingesting the real corpus (about a minute on two cores)")
        report = Ingestor.from_config(settings, embedder)(paths)
        log("retrieval", "scoring quality on the real index")
        qual = quality(settings.data_dir, embedder, items)
        bench = Bench(settings, embedder, [i.query for i in items], n_queries, np.random.default_rng(seed))
        pool = load_pool(Index.from_config(settings, embedder), bench.rng)
        points = [size_point(bench, pool, s) for s in sorted(sizes)]
    real = {"paths": [os.path.relpath(p, ROOT) for p in paths], "chunks": report.total_chunks}
    machine = {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": loadavg()}
    return {
        "real_index": {**real, "ingest_s": round(report.seconds, 1), "queries": len(items)},
        "quality": qual,
        "latency_ms": [row for _, rows in points for row in rows],
        "indexes": [row for row, _ in points],
        "config": {"k": K, "warmup": WARMUP, "target_ms_at_10k": TARGET_MS},
        "machine": machine,
    }


def render(r: dict[str, Any]) -> str:
    """The human-readable report."""
    real, m = r["real_index"], r["machine"]
    at10k = [x["total_p50"] for x in r["latency_ms"] if x["chunks"] == 10_000 and x["reranker"] == "maxsim"]
    target = f"Target: p50 <= {TARGET_MS:.0f} ms at 10k chunks with maxsim"
    if at10k:
        target += f": {at10k[0]} ms ({'meets' if at10k[0] <= TARGET_MS else 'MISSES'} it)"
    quality = [{k: f"{v:.3f}" if isinstance(v, float) else v for k, v in q.items()} for q in r["quality"]]
    quality_title = f"Quality on the real index ({real['chunks']} chunks from {', '.join(real['paths'])})"
    return "\n\n".join(
        [
            grid(f"{quality_title}, retrieval-dev, {real['queries']} queries, k={K}", quality),
            grid(
                f"Latency of searcher(query, {K}) in ms; open_s = new Searcher + 1st query", r["latency_ms"]
            ),
            grid("Index per size (MiB; cli_* = a fresh `servewise search` process)", r["indexes"]),
            target,
            f"Machine: {m['cpus']} CPUs; load average {m['loadavg_before']} -> {m['loadavg_after']}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="Comma-separated index sizes.")
    parser.add_argument("--queries", type=int, default=100, help="Timed queries per size and reranker.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
    args = parser.parse_args(argv)
    result = run([int(s) for s in args.sizes.split(",") if s.strip()], args.queries, args.seed)
    print(json.dumps(result, indent=2) if args.json else render(result))


if __name__ == "__main__":
    main()
