"""Loading saved blocks by reference, with the product's errors instead of Prefect's bare ``ValueError``.

Every flow loads its providers through :func:`load_block` (a reference such as
``kubernetes-runtime/local`` from ``delivery.yaml``) or :func:`load_configured_block` (a role whose
reference comes from ``DELIVERY_<ROLE>_BLOCK``), so a block that was never saved is reported once,
the same way: which reference, where it was set, and how to fix it.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import TypeVar

from prefect.blocks.core import Block

from delivery.errors import InvalidInput, NotFound
from delivery.settings import block_ref, block_setting

B = TypeVar("B", bound=Block)

# Imported before a load so Prefect resolves every block type slug of the product to its class.
BLOCK_MODULES = (
    "blocks.argocd_runtime",
    "blocks.azure_artifacts_feed",
    "blocks.azure_pipelines",
    "blocks.azure_repos_host",
    "blocks.git_host",
    "blocks.github_host",
    "blocks.gitops_repo",
    "blocks.image_registry",
    "blocks.kubernetes_runtime",
    "blocks.package_feed",
    "blocks.pipeline_runner",
    "blocks.pulumi_stack",
    "blocks.remote_git",
)
# The product's block types' logo, served by the stack's own Prefect server (cli/prefect_server.py) so the
# catalog shows it offline. The React UI draws an <img> for every type, a broken one when the type has no logo.
LOGO_ROUTE = "/delivery/logos"
LOGO_DIR = Path(__file__).parent / "logos"
LOGO_FILE = "delivery.svg"


def register_block_types() -> None:
    """Import the product's block modules, so ``Block.load`` can turn any of their slugs into a class."""
    for module in BLOCK_MODULES:
        importlib.import_module(module)


def product_block_classes() -> list[type[Block]]:
    """Every block type of the product: the classes of :data:`BLOCK_MODULES` that name their own slug.

    The bases (``GitHost``, ``PipelineRunner``...) name none: they are interfaces, not types to configure.
    """
    classes: list[type[Block]] = []
    for module_name in BLOCK_MODULES:
        module = importlib.import_module(module_name)
        classes += [value for value in vars(module).values()
                    if inspect.isclass(value) and issubclass(value, Block) and value.__module__ == module_name
                    and "_block_type_slug" in value.__dict__]
    return sorted(classes, key=lambda cls: cls.get_block_type_slug())


def stack_logo_url(ui_url: str | None) -> str | None:
    """The product's logo as the stack's server serves it (``<ui>/delivery/logos/delivery.svg``), or None."""
    return f"{ui_url.rstrip('/')}{LOGO_ROUTE}/{LOGO_FILE}" if ui_url else None


def register_block_types_on_server(ui_url: str | None = None) -> list[str]:
    """Register every product block type and its schema with the Prefect API (what ``delivery up`` does).

    The UI's block catalog then offers each type, also those no block of the local stack is saved
    as (``azure-pipelines-runner``, ``pulumi-stack``). Idempotent. Uses the current Prefect settings.

    Args:
        ui_url: the stack's UI address, whose server serves the product's logo (``delivery up``); None
            registers no logo. A later save of a product block in a process that registered none
            clears the logo again (Prefect re-registers the type on each save): ``up`` registers last.

    Returns:
        The slugs registered.
    """
    slugs = []
    logo = stack_logo_url(ui_url)
    for cls in product_block_classes():
        cls._logo_url = logo  # the class attribute Prefect registers the type's logo from
        cls.register_type_and_schema()
        slugs.append(cls.get_block_type_slug())
    return slugs


def load_block(reference: str, kind: type[B], *, source: str | None = None) -> B:
    """Load the block saved under ``reference`` and check that it is a ``kind``.

    Args:
        reference: ``<block-type-slug>/<document-name>``, e.g. ``gitops-repo/default``.
        kind: the class (or base class) the caller needs; ``Block`` accepts any block.
        source: where the reference was set (an environment variable, a ``delivery.yaml`` field),
            named in the error so the reader knows what to change.

    Raises:
        InvalidInput: the reference is malformed, names an unknown block type, or another kind of block.
        NotFound: no block is saved under the reference on the Prefect server.
    """
    where = f" (set by {source})" if source else ""
    slug, _, name = reference.partition("/")
    if not slug or not name:
        raise InvalidInput(f"block reference {reference!r}{where}: expected '<block-type-slug>/<name>'")
    register_block_types()
    try:
        block = Block.load(reference)
    except ValueError as exc:  # Prefect's answer for a missing document or block type
        fix = f"; save it (delivery up saves the local stack's blocks) or point {source} at a saved block" \
            if source else "; save it or name a saved block"
        raise NotFound(f"block {reference!r}{where} is not saved on the Prefect server ({exc}){fix}") from None
    except KeyError:  # a document whose block type no module of the product defines
        raise InvalidInput(f"block {reference!r}{where}: block type {slug!r} is not one the product knows") from None
    if not isinstance(block, kind):
        raise InvalidInput(f"block {reference!r}{where} is a {type(block).__name__}, not a {kind.__name__}")
    return block


def load_runtime(reference: str, *, source: str | None = None) -> Block:
    """Load an environment's runtime block: a ``KubernetesRuntime`` or an ``ArgoCDRuntime``.

    Raises:
        InvalidInput, NotFound: as :func:`load_block`; also a saved block that is no runtime.
    """
    from blocks.argocd_runtime import ArgoCDRuntime
    from blocks.kubernetes_runtime import KubernetesRuntime

    block = load_block(reference, Block, source=source)
    if not isinstance(block, (KubernetesRuntime, ArgoCDRuntime)):
        where = f" (set by {source})" if source else ""
        raise InvalidInput(f"block {reference!r}{where} is a {type(block).__name__}, not a runtime "
                           "(KubernetesRuntime or ArgoCDRuntime)")
    return block


def load_configured_block(role: str, kind: type[B]) -> B:
    """Load the block configured for a role (``DELIVERY_<ROLE>_BLOCK`` or the embedded default).

    Args:
        role: one of :data:`delivery.settings.BLOCK_ENV_DEFAULTS`, e.g. ``gitops_repo``.
        kind: the class the caller needs.

    Raises:
        InvalidInput, NotFound: as :func:`load_block`, naming the environment variable.
    """
    return load_block(block_ref(role), kind, source=block_setting(role))


__all__ = ["BLOCK_MODULES", "load_block", "load_configured_block", "load_runtime", "product_block_classes",
           "register_block_types", "register_block_types_on_server"]
