"""The Blocks catalog in headless Chromium: the product's block types are there, none with a broken logo.

Measured (Prefect 3.9, the React UI under ``/v2``): ``/v2/blocks/catalog`` shows a card per block type
(its name as a heading, its description, "Details" and "Create") and a "Search blocks" box that narrows
the cards by name ("N Block(s)"). Each card draws its type's logo as an ``<img>``, with no ``src`` when the
type has none: a broken image. Prefect's own types point at logos on the internet, broken offline; the
product's point at the one the stack's server serves (``blocks/loading.py``, ``cli/prefect_server.py``).
"""

from __future__ import annotations

from typing import Any

from blocks.loading import product_block_classes
from cli.stack_info import StackInfo

# every image of the page finished (loaded or failed) and how many of them show nothing
IMAGES_SETTLED = "() => [...document.images].every(image => image.complete)"
BROKEN_IMAGES = ("() => [...document.images].filter(image => image.naturalWidth === 0)"
                 ".map(image => image.getAttribute('src') || '(no src)')")


def test_every_block_type_of_the_product_is_in_the_catalog_without_a_broken_logo(page: Any,
                                                                                ui_stack: StackInfo) -> None:
    page.goto(f"{ui_stack.ui_url}/v2/blocks/catalog")
    search = page.get_by_placeholder("Search blocks")
    broken: dict[str, list[str]] = {}
    # pulumi-stack and azure-pipelines-runner among them: `delivery up` registers them, saves no block of them
    for cls in product_block_classes():
        name = cls.get_block_type_name()
        search.fill(name)  # narrowed to the product's card: Prefect's own logos are on the internet
        page.get_by_text("1 Block", exact=True).wait_for()
        page.get_by_role("heading", name=name, exact=True).wait_for()
        page.wait_for_function(IMAGES_SETTLED)
        assert page.evaluate("() => document.images.length") >= 1, f"{name}: no logo drawn"
        if shown_broken := page.evaluate(BROKEN_IMAGES):
            broken[name] = shown_broken
    assert broken == {}, broken
