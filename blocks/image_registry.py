"""The image registry blocks: push images built from a folder to an OCI registry, by digest.

:class:`OciImageRegistry` speaks the OCI distribution API over httpx (the embedded default is the
Debian ``docker-registry`` started by :mod:`cli.local_registry`; ACR or any v2 registry
works the same). Building and pushing live in :mod:`blocks.publishing`, which the pipeline's
publish step runs without Prefect; this block is how flows and tasks reach the registry.

Authentication (:mod:`blocks.registry_auth`): Basic with ``username``/``password``, or, when the
registry answers 401 with a ``Bearer`` challenge (ACR and every cloud registry), a token from the
challenge's realm, asked for with those credentials (or with ``refresh_token``, ACR's OAuth2 flow),
cached per scope until it expires, across calls and block instances with the same credentials.
"""

from __future__ import annotations

import hashlib
import json
import threading

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.publishing import (
    OCI_MANIFEST,
    ImageBlobs,
    build_image,
    build_layer,
    push_image,
    registry_call,
    registry_client,
    registry_host,
)
from blocks.registry_auth import RegistryAuth
from delivery.errors import NotFound
from delivery.models import PublishedImage
from delivery.provider_timing import timed_provider

__all__ = ["ImageBlobs", "ImageRegistry", "OciImageRegistry", "build_image", "build_layer"]

_AUTHS: dict[str, RegistryAuth] = {}  # sha256 of (url, username, password, refresh token) -> its tokens
_AUTHS_LOCK = threading.Lock()


class ImageRegistry(Block):
    """Base of image registries: push an assembled image, tell whether one is there by digest."""

    _block_type_name = "Image Registry"

    def pipeline_variables(self) -> dict[str, str]:  # pragma: no cover - interface
        """Variables the pipeline's publish job reads to reach this registry."""
        raise NotImplementedError

    def pipeline_secrets(self) -> dict[str, SecretStr]:
        """Secret variables the pipeline's publish job reads (credentials; none by default)."""
        return {}

    def has(self, image: PublishedImage) -> bool:  # pragma: no cover - interface
        """Whether the registry serves ``image`` by its digest."""
        raise NotImplementedError


@timed_provider
class OciImageRegistry(ImageRegistry):
    """An OCI distribution registry (the embedded Debian ``docker-registry``, ACR, any v2 registry).

    Attributes:
        url: base URL, e.g. ``http://127.0.0.1:5000``.
        username: for basic authentication, or at the registry's token realm, if the registry asks.
        password: the password or token for ``username``.
        refresh_token: an OAuth2 refresh token exchanged at the token realm for access tokens
            (ACR: ``az acr login --expose-token``); used instead of ``username``/``password``.
        timeout_seconds: per request.
    """

    _block_type_name = "OCI Image Registry"
    _block_type_slug = "oci-image-registry"
    _description = "Pushes images built from a folder to an OCI registry; later stages deploy by digest."

    url: str = Field(description="Registry base URL, e.g. http://127.0.0.1:5000")
    username: str | None = Field(default=None, description="For basic authentication, or at the registry's token "
                                 "service when it asks for tokens")
    password: SecretStr | None = Field(default=None, description="The password or token for the username")
    refresh_token: SecretStr | None = Field(
        default=None, description="An OAuth2 refresh token for the registry's token service (ACR); replaces "
                                  "username and password")
    timeout_seconds: float = Field(default=30.0, description="Timeout of one HTTP request")

    @property
    def host(self) -> str:
        """The registry as image references name it, e.g. ``127.0.0.1:5000``."""
        return registry_host(self.url)

    def pipeline_variables(self) -> dict[str, str]:
        """The registry URL, as ``IMAGE_REGISTRY``, and the user name (the secrets: :meth:`pipeline_secrets`)."""
        return {"IMAGE_REGISTRY": self.url, **({"IMAGE_REGISTRY_USERNAME": self.username} if self.username else {})}

    def pipeline_secrets(self) -> dict[str, SecretStr]:
        """``IMAGE_REGISTRY_PASSWORD`` and ``IMAGE_REGISTRY_REFRESH_TOKEN``, those the block holds."""
        held = {"IMAGE_REGISTRY_PASSWORD": self.password, "IMAGE_REGISTRY_REFRESH_TOKEN": self.refresh_token}
        return {name: value for name, value in held.items() if value is not None}

    def _registry_auth(self) -> RegistryAuth:
        """The authentication for this block's URL and credentials, shared by every instance in the process
        (blocks are loaded anew for each task), so tokens are reused until they expire."""
        password = self.password.get_secret_value() if self.password else None
        refresh_token = self.refresh_token.get_secret_value() if self.refresh_token else None
        key = hashlib.sha256(json.dumps([self.url, self.username, password, refresh_token]).encode()).hexdigest()
        with _AUTHS_LOCK:
            auth = _AUTHS.get(key)
            if auth is None:
                auth = _AUTHS[key] = RegistryAuth(self.username, password, refresh_token=refresh_token)
            return auth

    def _client(self, transport: httpx.BaseTransport | None = None) -> httpx.Client:
        return registry_client(self.url, auth=self._registry_auth(), timeout=self.timeout_seconds,
                               transport=transport)

    def push_image(
        self, image: ImageBlobs, *, repository: str, tag: str, transport: httpx.BaseTransport | None = None
    ) -> PublishedImage:
        """Push an assembled image (see :func:`blocks.publishing.push_image`).

        Args:
            image: from :func:`build_image`.
            repository: e.g. ``sample-app``.
            tag: a human label; the returned digest is what deploys.
            transport: an httpx transport (tests).
        """
        with self._client(transport) as client:
            return push_image(client, image, url=self.url, repository=repository, tag=tag)

    def manifest(self, repository: str, reference: str, *, transport: httpx.BaseTransport | None = None) -> dict:
        """Read a manifest by tag or digest.

        Raises:
            NotFound: the registry has no such manifest.
        """
        with self._client(transport) as client:
            response = registry_call(client, "GET", f"/v2/{repository}/manifests/{reference}",
                                     headers={"Accept": OCI_MANIFEST}, what=f"read manifest {repository}@{reference}",
                                     allow=(404,))
        if response.status_code == 404:
            raise NotFound(f"image {self.host}/{repository}@{reference} is not in the registry")
        return response.json()

    def has(self, image: PublishedImage, *, transport: httpx.BaseTransport | None = None) -> bool:
        """Whether this registry serves ``image``'s manifest by digest."""
        prefix = self.host + "/"
        if not image.repository.startswith(prefix):
            return False
        name = image.repository.removeprefix(prefix)
        with self._client(transport) as client:
            response = registry_call(client, "HEAD", f"/v2/{name}/manifests/{image.digest}",
                                     headers={"Accept": OCI_MANIFEST}, what=f"check {image.reference}", allow=(404,))
        return response.status_code == 200

    def resolve(self, repository: str, tag: str, *, transport: httpx.BaseTransport | None = None) -> str | None:
        """The digest a tag points at now, or None when the tag does not exist."""
        with self._client(transport) as client:
            response = registry_call(client, "HEAD", f"/v2/{repository}/manifests/{tag}",
                                     headers={"Accept": OCI_MANIFEST}, what=f"resolve {repository}:{tag}",
                                     allow=(404,))
        return response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None
