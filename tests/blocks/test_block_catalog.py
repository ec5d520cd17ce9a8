"""Every block type of the product is registered by `delivery up` and documented in the UI's catalog."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from prefect.blocks.core import Block

from blocks.loading import (
    BLOCK_MODULES,
    LOGO_DIR,
    LOGO_FILE,
    LOGO_ROUTE,
    product_block_classes,
    register_block_types_on_server,
    stack_logo_url,
)

BLOCKS_DIR = Path(__file__).resolve().parents[2] / "blocks"


def _defined_blocks() -> dict[str, list[type[Block]]]:
    """Block classes defined in each module of blocks/, found by reading the folder (not BLOCK_MODULES)."""
    found: dict[str, list[type[Block]]] = {}
    for path in sorted(BLOCKS_DIR.glob("*.py")):
        name = f"blocks.{path.stem}"
        module = importlib.import_module(name)
        classes = [value for value in vars(module).values()
                   if inspect.isclass(value) and issubclass(value, Block) and value.__module__ == name]
        if classes:
            found[name] = classes
    return found


def test_every_module_defining_a_block_is_loaded_and_every_block_type_registered() -> None:
    defined = _defined_blocks()
    assert set(defined) <= set(BLOCK_MODULES), f"add to BLOCK_MODULES: {set(defined) - set(BLOCK_MODULES)}"
    types = {cls for classes in defined.values() for cls in classes if "_block_type_slug" in cls.__dict__}
    assert set(product_block_classes()) == types
    slugs = {cls.get_block_type_slug() for cls in types}
    assert {"azure-pipelines-runner", "pulumi-stack", "local-git-host", "gitops-repo", "github-host",
            "azure-repos-host"} <= slugs


@pytest.mark.parametrize("cls", product_block_classes(), ids=lambda cls: cls.get_block_type_slug())
def test_each_block_type_is_documented_without_a_broken_image(cls: type[Block]) -> None:
    assert cls._description and cls._description.strip(), "no _description: the catalog card is empty"
    assert cls.__doc__ and cls.__doc__.strip()
    assert cls.get_description()
    undocumented = [name for name, field in cls.model_fields.items()
                    if not (field.description and field.description.strip())]
    assert undocumented == [], f"{cls.__name__}: fields without a description: {undocumented}"
    # the machine is offline: an image from the internet would show broken; the one the stack serves (set by
    # register_block_types_on_server), and the UI draws a broken <img> for a type without one (tests/ui)
    logo = cls._logo_url
    assert logo is None or urlparse(str(logo)).hostname == "127.0.0.1", logo
    schema_fields = cls.model_json_schema()["properties"]
    assert all(schema_fields[name].get("description") for name in cls.model_fields)


def test_the_logo_is_a_file_of_blocks_logos_at_the_stack_s_address() -> None:
    assert (LOGO_DIR / LOGO_FILE).read_text().lstrip().startswith("<svg")
    assert stack_logo_url("http://127.0.0.1:4200/") == f"http://127.0.0.1:4200{LOGO_ROUTE}/{LOGO_FILE}"
    assert stack_logo_url(None) is None


def test_up_s_registration_puts_every_block_type_in_the_catalog(prefect_server: str) -> None:
    ui = prefect_server.removesuffix("/api")
    registered = register_block_types_on_server(ui)
    expected = sorted(cls.get_block_type_slug() for cls in product_block_classes())
    assert sorted(registered) == expected

    response = httpx.post(f"{prefect_server}/block_types/filter", json={"limit": 200}, timeout=30)
    response.raise_for_status()
    catalog = {row["slug"]: row for row in response.json()}
    missing = [slug for slug in expected if slug not in catalog]
    assert missing == [], f"not in the catalog: {missing}"
    for slug in expected:
        assert catalog[slug]["description"], slug
        assert catalog[slug]["logo_url"] == stack_logo_url(ui), slug
