"""The image registry block: build an OCI image from a folder and push it over the distribution API.

There is no container engine on the build hosts, so the image is assembled here: one layer (a
reproducible tar.gz of the build context under the image's work directory), an OCI image config
and an OCI manifest, pushed blob by blob (``POST .../blobs/uploads/`` then ``PUT <Location>?digest=``)
and the manifest last. The same files give the same digest. Later stages deploy by digest.

Run as a pipeline step: ``python -m blocks.image_registry push --registry URL --tag TAG``
(reads the ``image`` section of ``delivery-build.yaml``; prints a ``##delivery[published]`` line).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from delivery.errors import AuthenticationError, InvalidInput, NotFound, PermanentError, TransientError
from delivery.models import PublishedImage

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
PUBLISHED_MARKER = "##delivery[published]"
_SKIP_NAMES = {"__pycache__", ".pytest_cache", ".git", ".mypy_cache", ".ruff_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------ building


class ImageBlobs:
    """An assembled image: the layer, the config and the manifest, with their digests."""

    def __init__(self, layer: bytes, diff_id: str, config: bytes, manifest: bytes) -> None:
        self.layer = layer
        self.diff_id = diff_id
        self.config = config
        self.manifest = manifest
        self.digest = _digest(manifest)


def _context_files(context: Path) -> list[Path]:
    files = []
    for path in sorted(context.rglob("*")):
        relative = path.relative_to(context)
        if any(part in _SKIP_NAMES or part.endswith(_SKIP_SUFFIXES) for part in relative.parts):
            continue
        if path.is_symlink():
            raise InvalidInput(f"image.context: {relative} is a symbolic link; images take regular files only")
        if path.is_file():
            files.append(path)
    return files


def build_layer(context: Path, *, workdir: str) -> tuple[bytes, str]:
    """Pack ``context`` under ``workdir`` as a reproducible gzip tar layer.

    Args:
        context: the folder whose files the image carries.
        workdir: the absolute folder in the image, e.g. ``/app``.

    Returns:
        The compressed layer and its diff id (the digest of the uncompressed tar).
    """
    if not context.is_dir():
        raise InvalidInput(f"image.context: {context} is not a folder")
    root = PurePosixPath(workdir.strip("/") or ".")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories = {root, *root.parents} - {PurePosixPath(".")}
        files = _context_files(context)
        for file in files:
            relative = PurePosixPath(file.relative_to(context).as_posix())
            directories.update(p for p in (root / relative).parents if str(p) != ".")
        for directory in sorted(directories, key=str):
            info = tarfile.TarInfo(str(directory))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for file in files:
            data = file.read_bytes()
            info = tarfile.TarInfo(str(root / file.relative_to(context).as_posix()))
            info.size, info.mode, info.mtime = len(data), 0o755 if os.access(file, os.X_OK) else 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0) as gz:
        gz.write(tar_bytes)
    return compressed.getvalue(), _digest(tar_bytes)


def build_image(
    context: Path,
    *,
    workdir: str = "/app",
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    labels: Mapping[str, str] | None = None,
) -> ImageBlobs:
    """Assemble a one-layer OCI image (linux/amd64) from a folder.

    Args:
        context: the folder to copy into the image.
        workdir: where the files go, and the working directory of ``command``.
        command: the image's ``Cmd``.
        env: extra environment variables.
        port: a TCP port to declare as exposed.
        labels: image labels, e.g. ``org.opencontainers.image.revision``.

    Returns:
        The blobs and the manifest digest.
    """
    layer, diff_id = build_layer(context, workdir=workdir)
    environment = ["PATH=/usr/local/bin:/usr/bin:/bin", *(f"{k}={v}" for k, v in sorted((env or {}).items()))]
    runtime: dict[str, Any] = {"Cmd": list(command), "WorkingDir": workdir, "Env": environment}
    if port:
        runtime["ExposedPorts"] = {f"{port}/tcp": {}}
    if labels:
        runtime["Labels"] = dict(sorted(labels.items()))
    config = _canonical(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "gitops-delivery: copy build context", "comment": "reproducible"}],
        }
    )
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": _digest(layer), "size": len(layer)}],
        }
    )
    return ImageBlobs(layer, diff_id, config, manifest)


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------------ the block


class ImageRegistry(Block):
    """Base of image registries: push an assembled image, tell whether one is there by digest."""

    _block_type_name = "Image Registry"

    def pipeline_variables(self) -> dict[str, str]:  # pragma: no cover - interface
        """Variables the pipeline's publish job reads to reach this registry."""
        raise NotImplementedError

    def has(self, image: PublishedImage) -> bool:  # pragma: no cover - interface
        """Whether the registry serves ``image`` by its digest."""
        raise NotImplementedError


class OciImageRegistry(ImageRegistry):
    """An OCI distribution registry (the embedded Debian ``docker-registry``, ACR, any v2 registry).

    Attributes:
        url: base URL, e.g. ``http://127.0.0.1:5000``.
        username: for basic authentication, if the registry asks.
        password: the password or token for ``username``.
        timeout_seconds: per request.
    """

    _block_type_name = "OCI Image Registry"
    _block_type_slug = "oci-image-registry"
    _description = "Pushes images built from a folder to an OCI registry; later stages deploy by digest."

    url: str = Field(description="Registry base URL, e.g. http://127.0.0.1:5000")
    username: str | None = None
    password: SecretStr | None = None
    timeout_seconds: float = 30.0

    @property
    def host(self) -> str:
        """The registry as image references name it, e.g. ``127.0.0.1:5000``."""
        return self.url.split("://", 1)[-1].rstrip("/")

    def pipeline_variables(self) -> dict[str, str]:
        """Variables the pipeline's publish job reads to reach this registry."""
        return {"IMAGE_REGISTRY": self.url}

    def _client(self, transport: httpx.BaseTransport | None = None) -> httpx.Client:
        auth = None
        if self.username:
            auth = httpx.BasicAuth(self.username, self.password.get_secret_value() if self.password else "")
        return httpx.Client(base_url=self.url.rstrip("/"), auth=auth, timeout=self.timeout_seconds,
                            transport=transport)

    def push_image(
        self, image: ImageBlobs, *, repository: str, tag: str, transport: httpx.BaseTransport | None = None
    ) -> PublishedImage:
        """Push an assembled image: blobs the registry lacks, then the manifest under ``tag``.

        Args:
            image: from :func:`build_image`.
            repository: e.g. ``sample-app``.
            tag: a human label; the returned digest is what deploys.
            transport: an httpx transport (tests).

        Returns:
            The published image with its registry-qualified repository and manifest digest.
        """
        with self._client(transport) as client:
            self._push_blob(client, repository, image.config)
            self._push_blob(client, repository, image.layer)
            response = _call(
                client, "PUT", f"/v2/{repository}/manifests/{tag}", content=image.manifest,
                headers={"Content-Type": OCI_MANIFEST}, what=f"push manifest {repository}:{tag}",
            )
            returned = response.headers.get("Docker-Content-Digest", image.digest)
            if returned != image.digest:
                raise PermanentError(f"registry stored manifest {returned}, expected {image.digest}")
        return PublishedImage(repository=f"{self.host}/{repository}", tag=tag, digest=image.digest)

    def _push_blob(self, client: httpx.Client, repository: str, data: bytes) -> None:
        digest = _digest(data)
        head = _call(client, "HEAD", f"/v2/{repository}/blobs/{digest}", what=f"check blob {digest}", allow=(404,))
        if head.status_code == 200:
            return
        started = _call(client, "POST", f"/v2/{repository}/blobs/uploads/", what=f"start upload to {repository}")
        location = started.headers.get("Location")
        if not location:
            raise PermanentError(f"registry answered the upload to {repository} without a Location")
        target = urljoin(self.url.rstrip("/") + "/", location)
        target += ("&" if "?" in target else "?") + f"digest={digest}"
        _call(client, "PUT", target, content=data, headers={"Content-Type": "application/octet-stream"},
              what=f"upload blob {digest}")

    def manifest(self, repository: str, reference: str, *, transport: httpx.BaseTransport | None = None) -> dict:
        """Read a manifest by tag or digest.

        Raises:
            NotFound: the registry has no such manifest.
        """
        with self._client(transport) as client:
            response = _call(client, "GET", f"/v2/{repository}/manifests/{reference}",
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
            response = _call(client, "HEAD", f"/v2/{name}/manifests/{image.digest}",
                             headers={"Accept": OCI_MANIFEST}, what=f"check {image.reference}", allow=(404,))
        return response.status_code == 200

    def resolve(self, repository: str, tag: str, *, transport: httpx.BaseTransport | None = None) -> str | None:
        """The digest a tag points at now, or None when the tag does not exist."""
        with self._client(transport) as client:
            response = _call(client, "HEAD", f"/v2/{repository}/manifests/{tag}",
                             headers={"Accept": OCI_MANIFEST}, what=f"resolve {repository}:{tag}", allow=(404,))
        return response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None


def _call(client: httpx.Client, method: str, url: str, *, what: str, allow: tuple[int, ...] = (),
          **kwargs: Any) -> httpx.Response:
    """One registry request, its failures translated into the product's errors."""
    try:
        response = client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise TransientError(f"{what}: registry timed out") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"{what}: registry unreachable ({type(exc).__name__})") from exc
    if response.is_success or response.status_code in allow:
        return response
    detail = response.text[:300] if method != "HEAD" else ""
    if response.status_code in (401, 403):
        raise AuthenticationError(f"{what}: registry refused the credentials ({response.status_code})")
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientError(f"{what}: registry answered {response.status_code} {detail}".strip())
    raise PermanentError(f"{what}: registry answered {response.status_code} {detail}".strip())


# ------------------------------------------------------------------------------------ pipeline step


def main(argv: Sequence[str] | None = None) -> int:
    """Pipeline step: build the image the build settings describe and push it."""
    from delivery.build_settings import BUILD_SETTINGS_FILE, parse_build_settings

    parser = argparse.ArgumentParser(prog="python -m blocks.image_registry")
    sub = parser.add_subparsers(dest="command", required=True)
    push = sub.add_parser("push", help="build and push the image of delivery-build.yaml")
    push.add_argument("--registry", required=True, help="registry URL")
    push.add_argument("--tag", required=True)
    push.add_argument("--settings", default=BUILD_SETTINGS_FILE)
    push.add_argument("--revision", default=os.environ.get("BUILD_SOURCEVERSION", ""))
    args = parser.parse_args(argv)
    settings_path = Path(args.settings)
    settings = parse_build_settings(settings_path.read_bytes(), source=str(settings_path))
    if settings.image is None:
        print("no image section in the build settings: nothing to push")
        return 0
    spec = settings.image
    labels = {"org.opencontainers.image.title": settings.app}
    if args.revision:
        labels["org.opencontainers.image.revision"] = args.revision
    image = build_image(settings_path.parent / spec.context, workdir=spec.workdir, command=spec.command,
                        env=spec.env, port=spec.port, labels=labels)
    password = os.environ.get("IMAGE_REGISTRY_PASSWORD")
    registry = OciImageRegistry(url=args.registry, username=os.environ.get("IMAGE_REGISTRY_USERNAME") or None,
                                password=SecretStr(password) if password else None)
    published = registry.push_image(image, repository=spec.repository, tag=args.tag)
    print(f"pushed {published.reference} (tag {published.tag})")
    print(PUBLISHED_MARKER + json.dumps({"kind": "image", **published.model_dump(mode="json")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
