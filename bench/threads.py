"""Where a server's cores went: CPU time by thread, read from ``/proc`` around a run.

A server on two cores running two compute threads loses throughput to every
other thread that takes a core from them (the compute threads meet at a barrier
after each graph node, so one descheduled thread stalls both). This splits a
process's CPU time into its ``compute`` threads (the ``n`` busiest: llama.cpp's
decode thread and its OpenMP workers, in ocak and in llama-server alike) and the
rest (HTTP, the event loop, JSON, SSE), and counts how often the compute threads
were preempted, so two servers can be compared per token they streamed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICK = 1.0 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ThreadSample:
    name: str
    cpu: float  # seconds, user + system
    preempted: int  # involuntary context switches


def sample(pid: int) -> dict[int, ThreadSample]:
    """Every thread of ``pid`` now: its name, CPU seconds and involuntary switches."""
    out: dict[int, ThreadSample] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except OSError:  # the thread ended between listing and reading
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) * TICK  # utime, stime
        preempted = next(
            int(line.split()[1])
            for line in status.splitlines()
            if line.startswith("nonvoluntary_ctxt_switches")
        )
        out[int(task.name)] = ThreadSample(name, cpu, preempted)
    return out


@dataclass(frozen=True, slots=True)
class CpuSplit:
    """A process's CPU over one run, split into its compute threads and the rest."""

    compute: float
    rest: float
    preempted: int  # involuntary switches of the compute threads

    def rest_us_per(self, tokens: int) -> float:
        return 1e6 * self.rest / tokens if tokens else float("nan")


def split(before: dict[int, ThreadSample], after: dict[int, ThreadSample], n: int) -> CpuSplit:
    """The CPU each thread used between two samples; the ``n`` busiest are compute."""
    used: list[tuple[float, int]] = []
    for tid, now in after.items():
        then = before.get(tid)
        cpu = now.cpu - (then.cpu if then else 0.0)
        switches = now.preempted - (then.preempted if then else 0)
        used.append((cpu, switches))
    used.sort(reverse=True)
    return CpuSplit(
        compute=sum(c for c, _ in used[:n]),
        rest=sum(c for c, _ in used[n:]),
        preempted=sum(s for _, s in used[:n]),
    )
