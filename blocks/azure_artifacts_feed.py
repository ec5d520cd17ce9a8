"""The Azure Artifacts feed block: wheels published with the PyPI upload protocol.

A drop-in for :class:`~blocks.package_feed.DirectoryPackageFeed`: the same :class:`PackageFeed`
interface, so the build stages (``ingest_build_result`` asks :meth:`AzureArtifactsFeed.has`) and the
pipeline's publish step (``python -m blocks.publishing package --feed "$PACKAGE_FEED"``, which uploads
when ``PACKAGE_FEED`` is a URL) work unchanged. The protocol lives in :mod:`blocks.pypi_upload`.

The feed's URLs default to Azure's, built from organization, project and feed; both can be given
instead (any server of the same protocol, e.g. pypiserver in the tests). Like Azure, a version
already present is refused, unless it is the very same file (a re-publish after a crash).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from blocks.package_feed import PackageFeed
from blocks.pypi_upload import PythonFeed, default_index_url
from blocks.remote_git import is_loopback_host
from delivery.models import PublishedPackage
from delivery.provider_timing import timed_provider

__all__ = ["AzureArtifactsFeed", "azure_feed_urls"]

AZURE_PACKAGES_HOST = "https://pkgs.dev.azure.com"
_ORGANIZATION = r"^[A-Za-z0-9][A-Za-z0-9-]{0,49}$"
_FEED = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_PROJECT_FORBIDDEN = re.compile(r"[/\\#?%&+*:<>|\"\x00-\x1f]")


def azure_feed_urls(organization: str, feed: str, project: str | None = None) -> tuple[str, str]:
    """Azure Artifacts' upload and simple index URLs of a feed (project-scoped when ``project`` is given)."""
    scope = f"{quote(organization)}/{quote(project)}" if project else quote(organization)
    base = f"{AZURE_PACKAGES_HOST}/{scope}/_packaging/{quote(feed)}/pypi"
    return f"{base}/upload/", f"{base}/simple/"


def _feed_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials: set username and token instead")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a feed URL takes no query or fragment")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"{url!r}: plain http would send the token in clear; use https (http only on loopback)")
    return url if url.endswith("/") else url + "/"


@timed_provider
class AzureArtifactsFeed(PackageFeed):
    """An Azure Artifacts Python feed (or any feed of the PyPI upload protocol), by upload URL and index.

    Attributes:
        organization: the Azure DevOps organization; with ``feed`` (and ``project`` for a project-scoped
            feed) it builds the URLs ``https://pkgs.dev.azure.com/{org}[/{project}]/_packaging/{feed}/pypi/...``.
        project: the project of a project-scoped feed; none for an organization-scoped one.
        feed: the feed's name.
        upload_url: where uploads go; default Azure's ``.../pypi/upload/``.
        index_url: the simple index; default Azure's ``.../pypi/simple/`` (or next to an Azure upload URL).
        username: any name: Azure Artifacts reads the token only.
        token: a personal access token with Packaging (Read & write) scope, sent as the password.
        timeout_seconds: per request.
    """

    _block_type_name = "Azure Artifacts Feed"
    _block_type_slug = "azure-artifacts-feed"
    _description = ("A Python feed of Azure Artifacts (or any PyPI upload protocol server): wheels are uploaded "
                    "as twine does; a published version is never replaced.")

    model_config = ConfigDict(extra="forbid")

    organization: str | None = Field(default=None, pattern=_ORGANIZATION,
                                     description="Azure DevOps organization (builds the default URLs)")
    project: str | None = Field(default=None, min_length=1, max_length=64,
                                description="Project of a project-scoped feed; empty for an organization feed")
    feed: str | None = Field(default=None, pattern=_FEED, description="The feed's name (builds the default URLs)")
    upload_url: str | None = Field(default=None, description="Upload URL; default https://pkgs.dev.azure.com/"
                                   "{organization}/{project}/_packaging/{feed}/pypi/upload/")
    index_url: str | None = Field(default=None, description="Simple index URL; default the .../pypi/simple/ "
                                  "next to the upload URL")
    username: str = Field(default="delivery", min_length=1, description="Any user name: Azure reads the token only")
    token: SecretStr = Field(description="Personal access token (Packaging: Read & write), sent as the password")
    timeout_seconds: float = Field(default=60.0, gt=0, le=600, description="Timeout of one HTTP request")

    @model_validator(mode="before")
    @classmethod
    def _drop_block_type_slug(cls, values: Any) -> Any:
        # Prefect stores the slug with the block's data; forbidding unknown fields must not refuse it
        if isinstance(values, dict) and "block_type_slug" in values:
            values = dict(values)
            slug = values.pop("block_type_slug")
            if slug and slug != cls.get_block_type_slug():
                raise ValueError(f"block_type_slug {slug!r} is not {cls.get_block_type_slug()!r}")
        return values

    @field_validator("project")
    @classmethod
    def _project_name(cls, value: str | None) -> str | None:
        if value is not None and (_PROJECT_FORBIDDEN.search(value) or value != value.strip() or value.endswith(".")):
            raise ValueError(f"{value!r} is not an Azure DevOps project name")
        return value

    @field_validator("upload_url", "index_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _feed_url(value)

    @model_validator(mode="after")
    def _resolve_urls(self) -> AzureArtifactsFeed:
        if self.upload_url is None or self.index_url is None:
            azure = azure_feed_urls(self.organization, self.feed, self.project) \
                if self.organization and self.feed else None
            if self.upload_url is None:
                if azure is None:
                    raise ValueError("give upload_url, or organization and feed (and project for a project-scoped "
                                     "feed) to build Azure's")
                self.upload_url = azure[0]
            if self.index_url is None:
                self.index_url = default_index_url(self.upload_url) or (azure[1] if azure else None)
                if self.index_url is None:
                    raise ValueError(f"give index_url: {self.upload_url} is not Azure's .../pypi/upload/, next to "
                                     "which the index would be")
        return self

    def _feed(self, transport: httpx.BaseTransport | None = None) -> PythonFeed:
        return PythonFeed(self.upload_url, self.index_url, username=self.username,
                          token=self.token.get_secret_value(), timeout=self.timeout_seconds, transport=transport)

    def pipeline_variables(self) -> dict[str, str]:
        """``PACKAGE_FEED`` (the upload URL), ``PACKAGE_FEED_INDEX`` and ``PACKAGE_FEED_USERNAME``.

        The token is not among them: queue-time variables are shown in the run. The publish step reads it
        from ``PACKAGE_FEED_PASSWORD``, a secret variable of the pipeline (on the local runner, the worker's
        environment).
        """
        return {"PACKAGE_FEED": self.upload_url, "PACKAGE_FEED_INDEX": self.index_url,
                "PACKAGE_FEED_USERNAME": self.username}

    def pipeline_secrets(self) -> dict[str, SecretStr]:
        """The token, as ``PACKAGE_FEED_PASSWORD``."""
        return {"PACKAGE_FEED_PASSWORD": self.token}

    def publish(self, distribution: Path, *, transport: httpx.BaseTransport | None = None) -> PublishedPackage:
        """Upload a wheel (see :meth:`blocks.pypi_upload.PythonFeed.upload`); the same file again is a no-op.

        Args:
            distribution: a built ``.whl``.
            transport: an httpx transport (tests).

        Raises:
            InvalidInput: not a wheel, or missing.
            PermanentError: the feed holds this version already as another file (or one it cannot confirm).
            AuthenticationError: the token was refused.
            TransientError: network, 429, 5xx.
        """
        with self._feed(transport) as feed:
            return feed.upload(Path(distribution))

    def has(self, package: PublishedPackage, *, transport: httpx.BaseTransport | None = None) -> bool:
        """Whether the feed's index lists a wheel of ``package``'s name and version."""
        with self._feed(transport) as feed:
            return feed.has(package.name, package.version)
