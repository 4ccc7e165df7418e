"""Memory of the server's backends, from /proc: what the model costs each one.

Backends run as the server's OS user, so one backend may read another's
/proc/<pid>/smaps_rollup and maps. PSS divides shared pages (such as
memory-mapped model weights) among the processes that map them, so the sum
of PSS over backends is their true total.
"""

from pathlib import Path

FIELDS = {"Rss": "rss", "Pss": "pss", "Private_Clean": "private", "Private_Dirty": "private"}


def memory_kb(pid: int, proc: Path = Path("/proc")) -> dict[str, int] | None:
    """{'rss', 'pss', 'private'} in kB, or None if the process is gone or unreadable."""
    totals = {"rss": 0, "pss": 0, "private": 0}
    try:
        text = (proc / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in FIELDS:
            totals[FIELDS[name]] += int(rest.split()[0])
    return totals


def mapped_files(pid: int, proc: Path = Path("/proc")) -> set[str]:
    """Paths of the files a process has mapped (libraries, mmapped weights)."""
    try:
        lines = (proc / str(pid) / "maps").read_text().splitlines()
    except OSError:
        return set()
    return {parts[5] for parts in (line.split(maxsplit=5) for line in lines) if len(parts) == 6}


def describe(pid: int, model_location: str) -> dict | None:
    """One backend: torch loaded, model files mapped, and its memory in MB."""
    memory = memory_kb(pid)
    if memory is None:
        return None
    files = mapped_files(pid)
    prefix = model_location.rstrip("/") + "/"
    return {
        "torch_loaded": any("libtorch" in f for f in files),
        "model_files_mapped": sum(1 for f in files if f.startswith(prefix)),
        **{f"{k}_mb": round(v / 1024, 1) for k, v in memory.items()},
    }
