"""One line per setup step: what was already in place and what changed."""

import shlex
import subprocess
import sys


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
