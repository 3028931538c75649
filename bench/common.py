"""Helpers shared by the benchmark scripts: settings, CLI runs, memory figures, plain-text tables.

Import it after the script has set its environment defaults (the scripts are the entry points).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CLI = ROOT / ".venv" / "bin" / "servewise"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from assistant.config import Settings, apply_offline_env, load_settings  # noqa: E402

apply_offline_env()  # the benchmark scripts are entry points: import this module first

#: Runs the servewise entry point as the console script does, then prints its own peak RSS.
#: (A child's ru_maxrss is useless here: Linux carries the forking parent's peak across exec.)
HWM_WRAPPER = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('VMHWM_KIB', open('/proc/self/status').read()"
    ".split('VmHWM:')[1].split()[0], file=sys.stderr))\n"
    "from assistant.cli import main\nmain()\n"
)


def log(name: str, message: str) -> None:
    """Progress goes to stderr so stdout holds only the figures."""
    print(f"[bench/{name}] {message}", file=sys.stderr, flush=True)


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``["generator.enforce_eager=false", ...]`` -> nested overrides (values parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects SECTION.KEY=VALUE, got {pair!r}")
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def make_settings(data_dir: Path, **extra: Any) -> Settings:
    """Settings for a private data dir, no progress bars, no environment leaking in."""
    values = {"data_dir": str(data_dir), "ingest": {"progress": False}, **extra}
    return load_settings(overrides=values, environ={})


def run_cli(args: list[str], measure_rss: bool = False) -> tuple[float, float | None]:
    """Run ``servewise ARGS`` in a new process from the repo root.

    Returns (wall seconds, the process's own peak RSS in MiB when ``measure_rss`` else None).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVEWISE_")}
    cmd = [str(CLI.parent / "python"), "-c", HWM_WRAPPER] if measure_rss else [str(CLI)]
    started = time.perf_counter()
    proc = subprocess.run([*cmd, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"servewise {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    peak = int(proc.stderr.split("VMHWM_KIB")[-1].split()[0]) / 1024 if measure_rss else None
    return wall, peak


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """ru_maxrss in MiB (Linux reports KiB)."""
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def current_rss_mib() -> float:
    """VmRSS of this process now, in MiB."""
    return round(int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024, 1)


def loadavg() -> str:
    """The 1/5/15-minute load averages (the benchmarks share the machine with whatever else runs)."""
    return " ".join(f"{a:.2f}" for a in os.getloadavg())


def table(title: str, rows: list[tuple[str, Any]]) -> str:
    """A two-column plain-text table."""
    width = max(len(name) for name, _ in rows)
    return "\n".join([title, "-" * len(title), *(f"  {name:<{width}}  {value}" for name, value in rows)])


def grid(title: str, rows: list[dict]) -> str:
    """Same-keyed dicts as a right-aligned plain-text table; the keys are the header."""
    cells = [list(rows[0]), *[[str(v) for v in row.values()] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  " + "  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([title, "-" * len(title), *lines])
