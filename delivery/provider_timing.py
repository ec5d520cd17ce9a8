"""Time spent in provider calls (git host, GitOps repo, registry, feed, runtime, Pulumi, pipeline commands).

Inert unless ``DELIVERY_PROVIDER_TIMINGS_FILE`` names a file (``bench/release.py`` sets it before
the stack's worker starts, so every flow run inherits it): then each provider call appends one JSON
line to it: the flow run (``PREFECT__FLOW_RUN_ID``, set by the worker), the stage and environment it
ran in, its task run's id and name (``None`` in flow code outside a stage or task), the call
(``Class.method``), its start (epoch seconds) and its duration. Only the outermost call counts, so a
block method calling another is timed once.

A provider class is marked with :func:`timed_provider` (its own public methods are timed); a call
made elsewhere (an HTTP probe) is wrapped in :func:`provider_call`. :func:`stage_scope` names the
stage for the calls inside it (``tasks/stage.py`` wraps every stage body in it).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from prefect.blocks.core import Block
from prefect.context import TaskRunContext

SETTING = "DELIVERY_PROVIDER_TIMINGS_FILE"
C = TypeVar("C", bound=type)

_stage: ContextVar[tuple[str, str | None] | None] = ContextVar("provider_timing_stage", default=None)
_inside: ContextVar[bool] = ContextVar("provider_timing_inside", default=False)
_lock = threading.Lock()


def _file() -> Path | None:
    value = os.environ.get(SETTING)
    return Path(value) if value else None


@contextmanager
def stage_scope(name: str, environment: str | None) -> Iterator[None]:
    """Attribute the provider calls made inside to stage ``name`` (of ``environment``)."""
    token = _stage.set((name, environment))
    try:
        yield
    finally:
        _stage.reset(token)


@contextmanager
def provider_call(call: str) -> Iterator[None]:
    """Time the block inside as one provider call named ``call`` (when recording, and outermost)."""
    path = _file()
    if path is None or _inside.get():
        yield
        return
    token = _inside.set(True)
    started, began = time.time(), time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - began
        _inside.reset(token)
        stage, environment = _stage.get() or (None, None)
        run = getattr(TaskRunContext.get(), "task_run", None)
        line = json.dumps({"flow_run": os.environ.get("PREFECT__FLOW_RUN_ID"), "pid": os.getpid(), "stage": stage,
                           "environment": environment, "task_run": str(run.id) if run else None,
                           "task_run_name": run.name if run else None, "call": call, "start": started,
                           "seconds": seconds})
        with _lock, path.open("a") as handle:
            handle.write(line + "\n")


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with provider_call(name):
            return fn(*args, **kwargs)

    return call


def timed_provider(cls: C) -> C:
    """Class decorator: time the public methods ``cls`` defines itself (not those of Block or pydantic)."""
    for name, value in list(vars(cls).items()):
        if name.startswith("_") or not inspect.isfunction(value) or hasattr(Block, name):
            continue  # Prefect's and pydantic's own methods (block_initialization, ...) are no provider calls
        setattr(cls, name, _timed(f"{cls.__name__}.{name}", value))
    return cls


def read_timings(path: Path) -> list[dict[str, Any]]:
    """The calls recorded in ``path``, oldest first (none when it does not exist)."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda row: row["start"])


__all__ = ["SETTING", "provider_call", "read_timings", "stage_scope", "timed_provider"]
