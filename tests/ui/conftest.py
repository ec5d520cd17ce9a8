"""Fixtures of the UI tests: one local stack (``delivery up``) and one headless Chromium for the session.

The stack protects its API with a credential (``<home>/api-auth``); the browser logs into the
Prefect UI with it once (:func:`ui_support.login`) and every test opens its own page in that logged-in
context. The browser is Debian's ``chromium`` (``make system-deps``), driven by the Python package
``playwright`` through ``executable_path``: nothing is downloaded.

A failing test leaves a screenshot of its page under ``tests/ui/screenshots/`` (git-ignored; the
report names the file), and the stack's folder (logs, Prefect's database) is kept for the post-mortem.
The stack stops after the last test of this folder: the rest of the suite does not need it.

While writing tests, ``DELIVERY_UI_STACK=<folder>`` points them at a stack already up in that folder
(``DELIVERY_HOME=<folder> delivery up``), which they then leave running.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from ui_support import UI_TIMEOUT_MS, chromium_path, login

from cli.stack import down, up
from cli.stack_info import StackInfo, read_stack

_HERE = Path(__file__).parent
SCREENSHOTS = _HERE / "screenshots"
_closers: list[Callable[[], None]] = []
REUSE_ENV = "DELIVERY_UI_STACK"


def _say(line: str) -> None:
    print(f"[ui] {line}", file=sys.stderr, flush=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ui: drives the Prefect UI in headless Chromium against a local stack")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.path).parent == _HERE:
            item.add_marker(pytest.mark.ui)


@pytest.fixture(scope="session")
def ui_stack(request: pytest.FixtureRequest) -> Iterator[StackInfo]:
    """The stack of this folder's tests (``delivery up`` in a folder of its own); stopped after the last of them."""
    if os.environ.get(REUSE_ENV):
        reused = read_stack(Path(os.environ[REUSE_ENV]).resolve())
        if reused is None:
            pytest.fail(f"{REUSE_ENV}={os.environ[REUSE_ENV]}: no stack.json there (run `delivery up` in it)")
        _say(f"reusing the stack of {reused.home} ({reused.ui_url}); left running")
        yield reused
        return
    home = Path(tempfile.mkdtemp(prefix="delivery-ui-stack-"))
    started = time.monotonic()
    exits = ExitStack()
    exits.callback(down, home=home / "stack", say=_say)
    try:
        info = up(home=home / "stack", say=_say)
    except BaseException:
        exits.close()
        raise
    _say(f"stack up in {time.monotonic() - started:.1f} s: {info.ui_url} (folder {home})")

    def close() -> None:
        exits.close()
        if request.session.testsfailed:
            _say(f"kept the stack's folder for the post-mortem: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)

    _closers.append(close)
    try:
        yield info
    finally:
        _stop()


@pytest.fixture(scope="session")
def browser(ui_stack: StackInfo) -> Iterator[Any]:
    """Headless Chromium (Debian's, through playwright), one for the session.

    Started after the stack: playwright's sync API runs an event loop in this thread, in which
    Prefect's sync calls of ``up`` (block saves) would only make coroutines.
    """
    executable = chromium_path()
    if not executable:
        pytest.fail("no chromium: install Debian's `chromium` (make system-deps) or set DELIVERY_CHROMIUM")
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    with sync_playwright() as playwright:
        # playwright passes --no-sandbox itself (chromium_sandbox defaults to False): fine as root
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        _say(f"chromium {launched.version} ({executable}) launched in {time.monotonic() - started:.1f} s")
        try:
            yield launched
        finally:
            launched.close()


def new_context(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    return context


@pytest.fixture(scope="session")
def ui(ui_stack: StackInfo, browser: Any) -> Iterator[Any]:
    """A browser context logged into the stack's Prefect UI with the stack's credential."""
    context = new_context(browser)
    started = time.monotonic()
    page = context.new_page()
    login(page, ui_stack.ui_url, ui_stack.auth_string() or "")
    page.close()
    _say(f"logged into the UI in {time.monotonic() - started:.1f} s")
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(ui: Any) -> Iterator[Any]:
    """A fresh page of the logged-in context (screenshotted when its test fails)."""
    opened = ui.new_page()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def anonymous_page(browser: Any) -> Iterator[Any]:
    """A page of a fresh context: nobody logged in (screenshotted when its test fails)."""
    context = new_context(browser)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, screenshot every page the test holds and name the files in the report."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or report.when == "teardown":
        return
    funcargs = getattr(item, "funcargs", {})
    for name in ("page", "anonymous_page"):
        shown = funcargs.get(name)
        if shown is None or shown.is_closed():
            continue
        SCREENSHOTS.mkdir(exist_ok=True)
        target = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', item.name)}-{name}.png"
        try:
            shown.screenshot(path=str(target), full_page=True)
        except Exception as exc:  # a broken page must not hide the test's own failure
            report.sections.append(("screenshot", f"{name}: no screenshot ({exc})"))
        else:
            report.sections.append(("screenshot", f"{name} at {shown.url}: {target}"))
            _say(f"screenshot of {name} ({shown.url}): {target}")


def _stop() -> None:
    while _closers:
        _closers.pop()()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the stack once the next test is not one of this folder's."""
    if nextitem is None or Path(nextitem.path).parent != _HERE:
        _stop()
