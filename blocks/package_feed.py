"""The package feed block: where built Python packages go.

The embedded default, :class:`DirectoryPackageFeed`, is a folder of wheels that
``pip install --find-links <folder>`` installs from. Like a real feed (Azure Artifacts, PyPI) it
refuses a different file under a version it already holds; the same bytes again are a no-op.

Run as a pipeline step: ``python -m blocks.package_feed publish --feed FOLDER dist/*.whl``
(prints one ``##delivery[published]`` line per package).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field

from delivery.errors import InvalidInput, PermanentError
from delivery.models import PublishedPackage

PUBLISHED_MARKER = "##delivery[published]"


def wheel_name_and_version(filename: str) -> tuple[str, str]:
    """Read the distribution name and version from a wheel's file name (PEP 427).

    Raises:
        InvalidInput: the name is not a wheel's.
    """
    if not filename.endswith(".whl") or filename.count("-") < 4:
        raise InvalidInput(f"{filename!r} is not a wheel file name (name-version-python-abi-platform.whl)")
    name, version = filename.split("-")[:2]
    return name.replace("_", "-").lower(), version


class PackageFeed(Block):
    """Base of package feeds: publish a built distribution, list what the feed holds."""

    _block_type_name = "Package Feed"

    def publish(self, distribution: Path) -> PublishedPackage:  # pragma: no cover - interface
        """Publish one built distribution; the same file twice is a no-op."""
        raise NotImplementedError

    def pipeline_variables(self) -> dict[str, str]:  # pragma: no cover - interface
        """Variables the pipeline's publish job reads to reach this feed."""
        raise NotImplementedError

    def has(self, package: PublishedPackage) -> bool:  # pragma: no cover - interface
        """Whether the feed holds ``package`` (name and version)."""
        raise NotImplementedError


class DirectoryPackageFeed(PackageFeed):
    """A folder of wheels, the form ``pip install --find-links`` reads.

    Attributes:
        path: the folder; created when missing.
        allow_overwrite: replace a different file already published under the same name. Off by
            default, as real feeds refuse it; a local demo that re-releases one version may set it.
    """

    _block_type_name = "Directory Package Feed"
    _block_type_slug = "directory-package-feed"
    _description = "A folder of wheels that pip install --find-links accepts."

    path: str = Field(description="Folder holding the published wheels")
    allow_overwrite: bool = False

    def pipeline_variables(self) -> dict[str, str]:
        """The feed folder, as ``PACKAGE_FEED``."""
        return {"PACKAGE_FEED": str(Path(self.path).resolve())}

    def publish(self, distribution: Path) -> PublishedPackage:
        """Copy a wheel into the feed, atomically.

        Args:
            distribution: a built ``.whl`` file.

        Returns:
            Name, version and location in the feed.

        Raises:
            InvalidInput: not a wheel, or missing.
            PermanentError: the feed already holds a different file under this name.
        """
        distribution = Path(distribution)
        name, version = wheel_name_and_version(distribution.name)
        if not distribution.is_file():
            raise InvalidInput(f"{distribution} does not exist")
        folder = Path(self.path)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / distribution.name
        data = distribution.read_bytes()
        if target.exists():
            if hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest():
                return PublishedPackage(name=name, version=version, location=str(target))
            if not self.allow_overwrite:
                raise PermanentError(
                    f"package feed {folder} already holds a different {distribution.name}: "
                    f"version {version} of {name} is published; raise the version"
                )
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, target)  # readers never see half a wheel
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return PublishedPackage(name=name, version=version, location=str(target))

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


def main(argv: Sequence[str] | None = None) -> int:
    """Pipeline step: publish built wheels to a directory feed."""
    parser = argparse.ArgumentParser(prog="python -m blocks.package_feed")
    sub = parser.add_subparsers(dest="command", required=True)
    publish = sub.add_parser("publish", help="copy wheels into the feed folder")
    publish.add_argument("--feed", required=True, help="the feed folder")
    publish.add_argument("distributions", nargs="+", type=Path)
    args = parser.parse_args(argv)
    feed = DirectoryPackageFeed(path=args.feed)
    for distribution in args.distributions:
        published = feed.publish(distribution)
        print(f"published {published.name} {published.version} to {published.location}")
        print(PUBLISHED_MARKER + json.dumps({"kind": "package", **published.model_dump(mode="json")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
