"""Helpers of the UI tests: the browser, the Prefect UI's login, the stack's REST API.

Measured on Prefect 3.9's server (the UI at ``info.ui_url``):

- ``/`` redirects to the React UI under ``/v2/`` ("Switch to V1 UI" in its sidebar; the earlier
  Vue UI answers at the paths without ``/v2``). Both keep the credential in the browser's
  ``localStorage`` (key ``prefect-password``), so one login serves both.
- Without a credential every page redirects to ``/v2/login?redirectTo=...``: a card "Login" with one
  ``<input type="password" placeholder="admin:pass">`` and a ``<button type="submit">Login</button>``;
  the whole line of ``<home>/api-auth`` (``delivery:<secret>``) goes into it. A wrong one leaves the
  page on ``/v2/login`` with the text "Invalid credentials".
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from cli.client import DeliveryClient
from cli.stack_info import StackInfo
from delivery.signing import key_file_name

T = TypeVar("T")

CHROMIUM_ENV = "DELIVERY_CHROMIUM"
SETTLED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
# A folder to keep the pages the README shows (`make screenshots`); unset, nothing is written.
SCREENSHOTS_ENV = "DELIVERY_UI_SCREENSHOTS"
LOGIN_PATH = "/v2/login"
# Generous: the UI is a single-page app served by a server that shares two cores with the rest of the suite.
UI_TIMEOUT_MS = 30_000


def chromium_path() -> str | None:
    """The browser the tests drive: ``DELIVERY_CHROMIUM``, else Debian's ``chromium`` on the PATH."""
    return os.environ.get(CHROMIUM_ENV) or shutil.which("chromium")


def login(page: Any, ui_url: str, credential: str) -> None:
    """Log ``page`` into the Prefect UI with ``credential`` (the line of ``api-auth``); wait until it is in."""
    page.goto(ui_url)
    password = page.locator("input[type=password]")
    password.fill(credential)
    page.get_by_role("button", name="Login").click()
    page.wait_for_url(lambda url: LOGIN_PATH not in url, timeout=UI_TIMEOUT_MS)


def snapshot(page: Any, name: str) -> None:
    """Keep the page as ``<DELIVERY_UI_SCREENSHOTS>/<name>.png`` when that folder is set (for the README)."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, f"{name}.png"))


def api(info: StackInfo, method: str, path: str, *, attempts: int = 10, **options: Any) -> httpx.Response:
    """One Prefect API call with the stack's credential, retried on 429/5xx and connection errors."""
    delay = 0.25
    for attempt in range(attempts):
        try:
            response = httpx.request(method, f"{info.api_url}{path}", timeout=30, headers=info.auth_headers(),
                                     **options)
        except httpx.TransportError:
            if attempt == attempts - 1:
                raise
        else:
            if response.status_code not in (429, 502, 503, 504) or attempt == attempts - 1:
                return response
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def persona_key(info: StackInfo, identity: str) -> Path:
    """The private key ``delivery up`` made for a persona of the stack."""
    return Path(info.home) / "keys" / key_file_name(identity)


def stack_client(info: StackInfo) -> DeliveryClient:
    """The product's client for the stack, with its credential."""
    return DeliveryClient(info.api_url, auth_string=info.auth_string(), retries=5)


def wait_settled(info: StackInfo, run_id: str, *, timeout: float, what: str) -> dict[str, Any]:
    """Wait until the flow run ends (Completed, Failed, Crashed or Cancelled); return it."""
    def settled() -> dict[str, Any] | None:
        run = api(info, "GET", f"/flow_runs/{run_id}").json()
        return run if run["state_type"] in SETTLED else None

    return wait_until(settled, timeout=timeout, what=what)


def wait_until(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; return it (AssertionError naming ``what`` at ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)
