"""Process management for the Serve benchmark (bench/serve.py): start a server, wait for it to answer,
stop it and kill by PID whatever it left behind; report (and, only when asked, kill) Ray processes.

Every process a server starts is tracked by (pid, start time) through its descendants and the
environment tag :data:`TAG_VAR`, so a recycled PID is never killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from common import CLI, ROOT, log

#: The log prefix of the Serve benchmark (``[bench/serve]``).
NAME = "serve"
#: Set in each server's environment: every process it leaves behind can be found by it.
TAG_VAR = "SW_BENCH_SERVE_TAG"
RAY_WORDS = ("raylet", "gcs_server", "ray::", "default_worker.py", "ray/dashboard", "ray/_private")


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stat_fields(pid: int | str) -> list[str] | None:
    """``/proc/PID/stat`` after the command name (index 0 is the state, field 3; None when gone)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time in clock ticks since boot) for every live process (no zombies)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat_fields(entry.name)) and fields[0] not in ("Z", "X"):
            out[int(entry.name)] = (int(fields[1]), int(fields[19]))
    return out


def read_proc(pid: int, what: str) -> str:
    """``/proc/PID/cmdline`` or ``environ`` as text ('' when the process is gone)."""
    try:
        return (Path("/proc") / str(pid) / what).read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Tracker:
    """The processes a server started: its descendants and whatever carries its tag, by (pid, start)."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex
        self.seen: set[tuple[int, int]] = set()

    def env(self) -> dict[str, str]:
        """The server's environment: ours without SERVEWISE_ variables, plus the tag."""
        return {k: v for k, v in os.environ.items() if not k.startswith("SERVEWISE_")} | {TAG_VAR: self.tag}

    def update(self, root: int) -> None:
        """Add ``root``'s descendants and every tagged process alive now."""
        procs = proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        todo, mine = [root], set()
        while todo:
            pid = todo.pop()
            mine.add(pid)
            todo += children.get(pid, [])
        mine |= {pid for pid in procs if f"{TAG_VAR}={self.tag}" in read_proc(pid, "environ")}
        self.seen |= {(pid, procs[pid][1]) for pid in mine if pid in procs and pid != os.getpid()}

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) used so far by the tracked processes still alive."""
        ticks = sum(int(f[11]) + int(f[12]) for pid in self.alive() if (f := stat_fields(pid)))
        return ticks / os.sysconf("SC_CLK_TCK")

    def send(self, sig: signal.Signals) -> None:
        """``sig`` to every tracked process still alive (SIGSTOP / SIGCONT: freeze and resume)."""
        for pid in self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def alive(self) -> list[int]:
        """Tracked processes still running (same pid and start time)."""
        procs = proc_table()
        return [pid for pid, start in self.seen if procs.get(pid, (0, -1))[1] == start]

    def reap(self, root: int) -> list[str]:
        """Tracked processes alive 10 s after ``root`` exited get SIGTERM, then SIGKILL after 10 s more;
        their command lines."""
        self.update(root)
        left = self.wait_gone([pid for pid in self.alive() if pid != root])
        names = [f"{pid} {read_proc(pid, 'cmdline')[:100]}" for pid in left]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            left = self.wait_gone(left)
        return names

    def wait_gone(self, pids: list[int], seconds: float = 10.0) -> list[int]:
        """Those of ``pids`` still alive after up to ``seconds``."""
        deadline = time.monotonic() + seconds
        while (pids := [p for p in pids if p in self.alive()]) and time.monotonic() < deadline:
            time.sleep(0.2)
        return pids


def spawn(cmd: list[str], env: dict[str, str], logs: Path, name: str) -> subprocess.Popen:
    """Start a server in its own session, its stdout and stderr in ``logs/NAME.out`` and ``.err``."""
    with open(logs / f"{name}.out", "w") as out, open(logs / f"{name}.err", "w") as err:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)


def log_tail(logs: Path, name: str, chars: int = 3000) -> str:
    """The end of a server's stdout and stderr."""
    return "\n".join(f"--- {p.name}\n{p.read_text()[-chars:]}" for p in sorted(logs.glob(f"{name}.*")))


async def wait_healthy(proc: subprocess.Popen, url: str, tracker: Tracker, timeout: float = 900.0) -> float:
    """Seconds from now until ``url`` answers 200 (the process must stay up)."""
    started, polls = time.perf_counter(), 0
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.perf_counter() - started < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}) before {url} answered")
            polls += 1
            if polls % 8 == 0:
                tracker.update(proc.pid)
            try:
                if (await client.get(url)).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


def stop(proc: subprocess.Popen, tracker: Tracker, name: str) -> dict[str, Any]:
    """SIGINT, SIGTERM after 30 s, SIGKILL after 60 s; then kill by PID what it left behind."""
    tracker.update(proc.pid)
    started, used = time.perf_counter(), None
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        used = sig.name
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            continue
    stop_s = time.perf_counter() - started
    left = tracker.reap(proc.pid)
    if left:
        log(NAME, f"{name} left {len(left)} processes, killed by PID: {left}")
    return {"signal": used, "returncode": proc.returncode, "stop_s": stop_s, "leftovers_killed": left}


@contextlib.asynccontextmanager
async def running(
    name: str, cmd: list[str], env: dict[str, str], health: str, logs: Path, out: dict[str, Any]
) -> AsyncIterator[tuple[subprocess.Popen, Tracker]]:
    """Spawn a server, time it to the first 200 from ``health`` (``out["start_s"]``); on the way out
    stop it and kill what it left (``out["stop"]``), errors or not."""
    tracker, since, proc = Tracker(), boot_ticks_now(), None
    out["command"] = " ".join(cmd)
    try:
        proc = spawn(cmd, tracker.env() | env, logs, name)
        out["start_s"] = await wait_healthy(proc, health, tracker)
        log(NAME, f"{name}: {health} answered 200 after {out['start_s']:.1f} s")
        tracker.update(proc.pid)
        yield proc, tracker
    finally:
        if proc is not None:
            out["stop"] = stop(proc, tracker, name) | {"ray_left": ray_leftovers(since)}


def ray_leftovers(since_ticks: int) -> list[str]:
    """Ray processes started after ``since_ticks`` still running (ours or not: we cannot tell)."""
    out = []
    for pid, (_, start) in proc_table().items():
        cmd = read_proc(pid, "cmdline")
        if start >= since_ticks and any(w in cmd for w in RAY_WORDS):
            out.append(f"{pid} {cmd[:100]}")
    return out


def boot_ticks_now() -> int:
    """Now, in the clock ticks since boot that /proc/PID/stat's start time uses."""
    return int(float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK"))


def ray_stop_force() -> None:
    """``ray stop --force``: kills EVERY Ray process on the machine (only with ``--ray-stop``)."""
    ray = CLI.parent / "ray"
    proc = subprocess.run([str(ray), "stop", "--force"], capture_output=True, text=True, cwd=ROOT)
    log(NAME, f"ray stop --force: {proc.returncode} {proc.stdout.strip()[-300:]}")
