"""One line per setup step: what was already in place and what changed."""

import shlex
import subprocess
import sys
import threading
import time


def done(what: str) -> None:
    print(f"  ok       {what}", flush=True)


def changing(what: str) -> None:
    print(f"  install  {what}", flush=True)


def note(what: str) -> None:
    print(f"  note     {what}", flush=True)


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, showing its output only if it fails."""
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, check=False, **kwargs
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(
            f"hybrid-search: command failed ({result.returncode}): {shlex.join(map(str, cmd))}"
        )
    return result


def bar(done: int, total: int, started: float, width: int = 30) -> str:
    """[####....] done/total rows, rows/s and the time left, since started (monotonic)."""
    elapsed = max(time.monotonic() - started, 1e-9)
    rate = done / elapsed
    filled = width * done // total if total else width
    eta = (total - done) / rate if rate > 0 else float("inf")
    eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta != float("inf") else "--:--:--"
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} rows"
        f"  {rate:.1f} rows/s  ETA {eta_text}"
    )


class Progress:
    """A progress bar redrawn in place on a terminal, a line per step elsewhere (a log);
    advance() may be called from several threads."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.started = time.monotonic()
        self.interactive = sys.stdout.isatty()
        self._lock = threading.Lock()

    def advance(self, rows: int) -> None:
        with self._lock:
            self.done += rows
            line = bar(min(self.done, self.total), self.total, self.started)
            end = "" if self.interactive else "\n"
            print(f"\r{line}" if self.interactive else line, end=end, flush=True)

    def finish(self) -> None:
        if self.interactive:
            print()
