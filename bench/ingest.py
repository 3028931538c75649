"""Ingest benchmark: cold-ingest throughput, unchanged re-ingest time, peak memory.

Everything runs in a fresh temporary data dir that is deleted at the end:

1. **Model load**: building the packaged MiniLM embedder plus one warm-up encode, reported on its
   own so that ingest throughput excludes it.
2. **Cold ingest** of the bundled ``corpus/`` plus ``../shared/upstream`` and ``../shared/seed``
   when they sit beside the checkout: files, chunks embedded, seconds and chunks/s (the model is
   already warm; opening Chroma and the token store is included, as a user would pay for it).
3. **Unchanged re-ingest** of ``corpus/``: in-process with a fresh ``Ingestor`` per run (median of
   5), and as a new ``servewise --data-dir D ingest corpus/`` process (wall time, median of 3;
   ``servewise --version`` is timed too, as the interpreter + CLI start-up floor). Product target:
   <= 2 s for the unchanged corpus.
4. **Peak RSS**: ``ru_maxrss`` of this process; for the CLI, ``RUSAGE_CHILDREN`` and the CLI's
   own ``VmHWM`` from one extra run (see ``common.HWM_WRAPPER``): Linux carries the forking
   parent's peak into a child's ``ru_maxrss`` across exec, so ``RUSAGE_CHILDREN`` is at least
   this process's RSS at fork time, not the CLI's own footprint.

Run from the repository root (``make bench`` does)::

    .venv/bin/python bench/ingest.py          # plain-text tables
    .venv/bin/python bench/ingest.py --json   # one JSON object

It prints figures and asserts nothing; timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import CLI, ROOT, SHARED, loadavg, log, make_settings, peak_rss_mib, run_cli, table

from assistant.config import Settings
from assistant.embedder import SentenceTransformerEmbedder
from assistant.ingest.indexer import Ingestor

CORPUS = ROOT / "corpus"
TARGET_UNCHANGED_S = 2.0


def cold_paths() -> list[Path]:
    """corpus/ plus the shared fixtures that exist beside this checkout."""
    return [CORPUS] + [p for p in (SHARED / "upstream", SHARED / "seed") if p.is_dir()]


def load_embedder(settings: Settings) -> tuple[SentenceTransformerEmbedder, float]:
    """The packaged MiniLM, loaded and warmed; returns it with the seconds that took."""
    started = time.perf_counter()
    embedder = SentenceTransformerEmbedder.from_config(settings.embedder)
    embedder.encode(["warm up the model"])
    return embedder, time.perf_counter() - started


def cold_ingest(settings: Settings, embedder: SentenceTransformerEmbedder, paths: list[Path]) -> dict:
    """Ingest ``paths`` into the empty data dir."""
    started = time.perf_counter()
    report = Ingestor.from_config(settings, embedder)(paths)
    wall = time.perf_counter() - started
    return {
        "paths": [os.path.relpath(p, ROOT) for p in paths],
        "files": len(report.files),
        "added": report.count("added"),
        "skipped": report.count("skipped"),
        "chunks": report.embedded,
        "seconds": round(wall, 3),
        "chunks_per_s": round(report.embedded / wall, 2) if wall else None,
    }


def reingest_in_process(settings: Settings, embedder: SentenceTransformerEmbedder, runs: int = 5) -> dict:
    """Re-ingest the unchanged corpus with a fresh Ingestor (and Index) each run."""
    walls, embedded = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        report = Ingestor.from_config(settings, embedder)([CORPUS])
        walls.append(time.perf_counter() - started)
        embedded += report.embedded
    return {
        "runs": runs,
        "median_s": round(statistics.median(walls), 4),
        "max_s": round(max(walls), 4),
        "embedded": embedded,
    }


def reingest_cli(data_dir: Path, runs: int = 3) -> dict:
    """Wall time of a new ``servewise ingest corpus/`` process, and of ``servewise --version``."""
    args = ["--data-dir", str(data_dir), "ingest", "corpus/"]
    walls = [run_cli(args)[0] for _ in range(runs)]
    startup = statistics.median(run_cli(["--version"])[0] for _ in range(runs))
    median = statistics.median(walls)
    return {
        "runs": runs,
        "median_s": round(median, 3),
        "max_s": round(max(walls), 3),
        "startup_median_s": round(startup, 3),
        "target_s": TARGET_UNCHANGED_S,
        "meets_target": median <= TARGET_UNCHANGED_S,
        "peak_rss_mib": round(run_cli(args, measure_rss=True)[1] or 0.0, 1),
    }


def run() -> dict[str, Any]:
    """All measurements, in a temporary data dir."""
    if not CLI.exists():
        raise SystemExit(f"{CLI} not found: run `make install` first")
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="servewise-bench-ingest-") as tmp:
        settings = make_settings(Path(tmp) / "data")
        log("ingest", "loading the embedder")
        embedder, load_s = load_embedder(settings)
        rss_after_load = peak_rss_mib()
        log("ingest", "cold ingest (embeds every chunk; about a minute on two cores)")
        cold = cold_ingest(settings, embedder, cold_paths())
        log("ingest", "unchanged re-ingest, in-process and via the CLI")
        warm = reingest_in_process(settings, embedder)
        cli = reingest_cli(settings.data_dir)
    rss = {
        "after_model_load": rss_after_load,
        "peak_self": peak_rss_mib(),
        "cli_reingest_vmhwm": cli["peak_rss_mib"],
        "rusage_children": peak_rss_mib(resource.RUSAGE_CHILDREN),
    }
    machine = {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": loadavg()}
    return {
        "model_load_s": round(load_s, 3),
        "cold": cold,
        "reingest_in_process": warm,
        "reingest_cli": cli,
        "rss_mib": rss,
        "machine": machine,
    }


def render(r: dict[str, Any]) -> str:
    """The human-readable report."""
    cold, warm, cli, rss, m = (
        r[k] for k in ("cold", "reingest_in_process", "reingest_cli", "rss_mib", "machine")
    )
    verdict = "meets" if cli["meets_target"] else "MISSES"
    files = f"{cold['files']} ({cold['added']} / {cold['skipped']})"
    return "\n\n".join(
        [
            table("Model", [("load + warm-up encode (s)", r["model_load_s"])]),
            table(
                "Cold ingest (model already loaded)",
                [
                    ("paths", ", ".join(cold["paths"])),
                    ("files (added / skipped)", files),
                    ("chunks embedded", cold["chunks"]),
                    ("seconds", cold["seconds"]),
                    ("chunks/s", cold["chunks_per_s"]),
                ],
            ),
            table(
                "Re-ingest of the unchanged corpus/",
                [
                    (f"in-process, median of {warm['runs']} (s)", warm["median_s"]),
                    ("in-process, max (s)", warm["max_s"]),
                    ("chunks re-embedded (all runs)", warm["embedded"]),
                    (f"CLI process wall, median of {cli['runs']} (s)", cli["median_s"]),
                    ("CLI process wall, max (s)", cli["max_s"]),
                    ("CLI start-up floor, `--version` (s)", cli["startup_median_s"]),
                    ("target", f"<= {cli['target_s']} s ({verdict} it)"),
                ],
            ),
            table(
                "Peak RSS (MiB)",
                [
                    ("this process after model load", rss["after_model_load"]),
                    ("this process, peak", rss["peak_self"]),
                    ("CLI re-ingest process, own peak (VmHWM)", rss["cli_reingest_vmhwm"]),
                    ("RUSAGE_CHILDREN (inherits this process's RSS at fork)", rss["rusage_children"]),
                ],
            ),
            f"Machine: {m['cpus']} CPUs; load average {m['loadavg_before']} -> {m['loadavg_after']}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
    args = parser.parse_args(argv)
    result = run()
    print(json.dumps(result, indent=2) if args.json else render(result))


if __name__ == "__main__":
    main()
