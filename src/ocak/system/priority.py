"""``--priority low``: let a game beside ocak keep the CPU it needs.

psutil knows the three systems: on Windows the process gets the below-normal priority
class; on Linux and macOS a nice value of 10. On Linux a nice value belongs to each
thread, so every thread the process has now is lowered too (threads made later, such as
llama.cpp's workers, inherit it from the thread that makes them).
"""

from __future__ import annotations

import contextlib
import os
import sys

LOW_NICE = 10


def set_priority(priority: str) -> str:
    """Apply ``normal`` (nothing) or ``low``; what was done, for the log."""
    if priority != "low":
        return "normal priority"
    import psutil

    process = psutil.Process()
    if sys.platform == "win32":  # pragma: no cover - Windows only
        process.nice(psutil.BELOW_NORMAL_PRIORITY_CLASS)
        return "below-normal priority class"
    process.nice(max(process.nice(), LOW_NICE))
    if sys.platform.startswith("linux"):
        for thread in process.threads():
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                current = os.getpriority(os.PRIO_PROCESS, thread.id)
                os.setpriority(os.PRIO_PROCESS, thread.id, max(current, LOW_NICE))
    return f"nice {process.nice()}"
