"""The processes of a local stack: started in their own session with a log, found again by pid and a word
of their command line, and stopped by process group (never a process that is not ours)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from cli.stack_info import StackProcess
from delivery.errors import TransientError


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(process: StackProcess) -> bool:
    """Whether the recorded pid still runs a command line holding the process's marker (pids are reused)."""
    try:
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return process.marker in cmdline


def spawn(name: str, command: list[str], *, env: dict[str, str], logs: Path, marker: str, cwd: Path) -> StackProcess:
    """Start ``command`` in a session of its own (so it stops as a group), its output in ``<logs>/<name>.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return StackProcess(name=name, pid=process.pid, marker=marker, log=str(log_path))


def wait_until(what: str, check: Callable[[], Any], *, timeout: float, process: StackProcess | None = None) -> Any:
    """Poll ``check`` until it returns something true; :class:`TransientError` on timeout or if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not alive(process):
            tail = Path(process.log).read_text(errors="replace")[-800:] if Path(process.log).exists() else ""
            raise TransientError(f"{what}: the process exited; last log lines:\n{tail}")
        try:
            value = check()
        except (OSError, httpx.HTTPError):
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise TransientError(f"{what}: not ready after {timeout:.0f} s")


def stop_process(process: StackProcess, *, timeout: float = 20.0) -> bool:
    """Stop one recorded process and its process group; False when it was already gone (or not ours)."""
    if not alive(process):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(process.pid, os.WNOHANG)
            except ChildProcessError:
                finished = 0 if alive(process) else process.pid
            if finished or not alive(process):
                return True
            time.sleep(0.2)
    return True


__all__ = ["alive", "free_port", "spawn", "stop_process", "wait_until"]
