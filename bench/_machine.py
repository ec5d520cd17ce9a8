"""The machine a bench ran on, printed with its figures (they mean little without it).

Shared by every bench (``from _machine import machine_line``: a bench runs as ``python bench/x.py``,
so this folder is first on its path). ``make bench`` runs ``bench/[!_]*.py``: not this helper.
"""

from __future__ import annotations

import os
import platform


def machine_line() -> str:
    """Cores, memory, load and Python of this machine, read now."""
    memory = "? GiB"
    try:
        with open("/proc/meminfo") as meminfo:
            kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
        memory = f"{kib / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass  # not Linux: the figures still print
    try:
        load = f", load {os.getloadavg()[0]:.1f}"
    except OSError:
        load = ""
    return (f"machine: {os.cpu_count()} cores, {memory} memory{load}, Python {platform.python_version()} "
            f"({platform.python_implementation()}), {platform.system()} {platform.machine()}")


def print_machine() -> None:
    """Print :func:`machine_line` (flushed, so it comes before a long run's figures)."""
    print(machine_line(), flush=True)
