"""The package feed blocks: where built Python packages go.

The embedded default, :class:`DirectoryPackageFeed`, is a folder of wheels that
``pip install --find-links <folder>`` installs from. Like a real feed (Azure Artifacts, PyPI) it
refuses a different file under a version it already holds; the same bytes again are a no-op.
The copying lives in :mod:`blocks.publishing`, which the pipeline's publish step runs.
"""

from __future__ import annotations

from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.publishing import publish_wheel, wheel_name_and_version
from delivery.models import PublishedPackage
from delivery.provider_timing import timed_provider

__all__ = ["DirectoryPackageFeed", "PackageFeed", "wheel_name_and_version"]


class PackageFeed(Block):
    """Base of package feeds: publish a built distribution, tell whether the feed holds one."""

    _block_type_name = "Package Feed"

    def publish(self, distribution: Path) -> PublishedPackage:  # pragma: no cover - interface
        """Publish one built distribution; the same file twice is a no-op."""
        raise NotImplementedError

    def pipeline_variables(self) -> dict[str, str]:  # pragma: no cover - interface
        """Variables the pipeline's publish job reads to reach this feed."""
        raise NotImplementedError

    def pipeline_secrets(self) -> dict[str, SecretStr]:
        """Secret variables the pipeline's publish job reads (credentials; none for a folder)."""
        return {}

    def has(self, package: PublishedPackage) -> bool:  # pragma: no cover - interface
        """Whether the feed holds ``package`` (name and version)."""
        raise NotImplementedError


@timed_provider
class DirectoryPackageFeed(PackageFeed):
    """A folder of wheels, the form ``pip install --find-links`` reads.

    Attributes:
        path: the folder; created when missing.
        allow_overwrite: replace a different file already published under the same name. Off by
            default, as real feeds refuse it; a local demo that re-releases one version may set it
            (the pipeline's publish step learns it through ``PACKAGE_FEED_ALLOW_OVERWRITE``).
    """

    _block_type_name = "Directory Package Feed"
    _block_type_slug = "directory-package-feed"
    _description = "A folder of wheels that pip install --find-links accepts."

    path: str = Field(description="Folder holding the published wheels")
    allow_overwrite: bool = Field(default=False, description="Replace a different file published under the same "
                                  "name (real feeds refuse it; a local demo may allow it)")

    def pipeline_variables(self) -> dict[str, str]:
        """The feed folder, as ``PACKAGE_FEED`` (and ``PACKAGE_FEED_ALLOW_OVERWRITE`` when set)."""
        variables = {"PACKAGE_FEED": str(Path(self.path).resolve())}
        if self.allow_overwrite:
            variables["PACKAGE_FEED_ALLOW_OVERWRITE"] = "true"
        return variables

    def publish(self, distribution: Path) -> PublishedPackage:
        """Copy a wheel into the feed, atomically (see :func:`blocks.publishing.publish_wheel`).

        Raises:
            InvalidInput: not a wheel, or missing.
            PermanentError: the feed already holds a different file under this name.
        """
        return publish_wheel(Path(self.path), Path(distribution), allow_overwrite=self.allow_overwrite)

    def has(self, package: PublishedPackage) -> bool:
        """Whether the feed holds a wheel of ``package``'s name and version."""
        return any(found.name == package.name and found.version == package.version for found in self.list_packages())

    def list_packages(self) -> list[PublishedPackage]:
        """The wheels the feed holds, sorted by file name."""
        folder = Path(self.path)
        found = []
        for wheel in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
            name, version = wheel_name_and_version(wheel.name)
            found.append(PublishedPackage(name=name, version=version, location=str(wheel)))
        return found
