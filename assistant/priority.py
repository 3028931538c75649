"""CPU priority of the processes a backend starts (Linux ``/proc``; elsewhere these do nothing).

vLLM's CPU build decodes on every core. On a machine it shares with the other stages, its engine
processes are lowered once they are up (they start at full priority, so a cold start is not slowed
by the other replicas loading at the same time): ``SCHED_IDLE`` gives them a core only when no
other thread wants it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


def descendants(pid: int) -> set[int]:
    """PIDs of the live processes under ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def threads(pid: int) -> list[int]:
    """Thread IDs of ``pid`` (empty when it is gone)."""
    try:
        return [int(t.name) for t in (PROC / str(pid) / "task").iterdir()]
    except OSError:
        return []


def lower_priority(pids: Iterable[int], nice: int = 0, idle: bool = False) -> int:
    """Add ``nice`` to every thread of ``pids`` and, with ``idle``, put them under ``SCHED_IDLE``;
    threads they start later inherit it. Returns the number of threads changed."""
    changed = 0
    for pid in pids:
        for tid in threads(pid):
            try:
                if nice:
                    current = os.getpriority(os.PRIO_PROCESS, tid)
                    os.setpriority(os.PRIO_PROCESS, tid, min(19, current + nice))
                if idle:
                    os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
                changed += 1
            except (ProcessLookupError, PermissionError):  # exited meanwhile, or not ours
                continue
    return changed
