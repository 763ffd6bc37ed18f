"""What every benchmark records about the machine it ran on (bench/results/*.json, "machine")."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _proc_field(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def describe(**extra: object) -> dict:
    """CPU model and count, memory, load, kernel and Python, plus the versions a benchmark names in `extra`."""
    mem_kib = _proc_field("/proc/meminfo", "MemTotal").split()
    return {
        "cpu": _proc_field("/proc/cpuinfo", "model name"),
        "cpus": os.cpu_count(),
        "mem_gib": round(int(mem_kib[0]) / 2**20, 1) if mem_kib else None,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **extra,
    }
