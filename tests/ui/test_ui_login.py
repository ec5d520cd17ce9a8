"""Logging into the Prefect UI with the stack's credential, in headless Chromium."""

from __future__ import annotations

from typing import Any

from ui_support import LOGIN_PATH, login

from cli.stack_info import StackInfo


def test_the_stacks_credential_opens_the_ui_on_the_products_deployments(page: Any, ui_stack: StackInfo) -> None:
    page.goto(f"{ui_stack.ui_url}/v2/deployments")

    assert LOGIN_PATH not in page.url
    page.get_by_role("link", name="Logout").or_(page.get_by_text("Logout")).first.wait_for()
    for deployment in ("release", "roll-back", "acknowledge-incident"):
        page.get_by_role("link", name=deployment, exact=True).first.wait_for()


def test_a_wrong_credential_is_refused(anonymous_page: Any, ui_stack: StackInfo) -> None:
    page = anonymous_page
    page.goto(f"{ui_stack.ui_url}/v2/deployments")
    page.wait_for_url(lambda url: LOGIN_PATH in url)  # anonymous: sent to the login page

    page.locator("input[type=password]").fill("delivery:not-the-secret")
    page.get_by_role("button", name="Login").click()

    page.get_by_text("Invalid credentials").wait_for()
    assert LOGIN_PATH in page.url
    assert page.get_by_role("link", name="release", exact=True).count() == 0

    # the right one, in the same page, then opens it
    login(page, ui_stack.ui_url, ui_stack.auth_string() or "")
    assert LOGIN_PATH not in page.url
