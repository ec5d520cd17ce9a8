"""What the pipeline's publish jobs run, kept free of Prefect so the steps start fast.

- Images: there is no container engine on the build hosts, so the image is assembled here: one
  layer (a reproducible tar.gz of the build context under the image's work directory), an OCI
  image config and an OCI manifest, pushed blob by blob over the distribution API
  (``POST .../blobs/uploads/`` then ``PUT <Location>?digest=``), the manifest last. The same files
  give the same digest; later stages deploy by digest. Credentials come from the secret variables
  ``IMAGE_REGISTRY_USERNAME``/``IMAGE_REGISTRY_PASSWORD`` (Basic, or at the registry's token realm
  when it asks for bearer tokens: :mod:`blocks.registry_auth`) or ``IMAGE_REGISTRY_REFRESH_TOKEN``
  (an ACR refresh token). The publish step runs outside Prefect, where
  no task retry would follow, so it retries a transient registry failure itself (network, 429,
  5xx: :func:`push_with_retries`) instead of failing the build on it.
- Packages: a wheel is copied atomically into a directory feed; the same bytes again are a no-op,
  different bytes under a published version are refused, as real feeds do. When ``--feed`` is a URL
  (an Azure Artifacts feed), the wheel is uploaded with the PyPI protocol instead
  (:mod:`blocks.pypi_upload`; ``PACKAGE_FEED_INDEX``, ``PACKAGE_FEED_USERNAME``, and the token in the
  secret variable ``PACKAGE_FEED_PASSWORD``), with the same rules.

Steps::

    python -m blocks.publishing package --feed "$PACKAGE_FEED" dist/*.whl
    python -m blocks.publishing image --registry "$IMAGE_REGISTRY" --tag "$BUILD_SOURCEVERSION"

Each prints a ``##delivery[published]{json}`` line the pipeline runners collect.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urljoin

import httpx

from blocks.registry_auth import RegistryAuth
from delivery.errors import AuthenticationError, DeliveryError, InvalidInput, PermanentError, TransientError
from delivery.models import PublishedImage, PublishedPackage

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
PUBLISHED_MARKER = "##delivery[published]"
PUSH_ATTEMPTS = 4
T = TypeVar("T")
_SKIP_NAMES = {"__pycache__", ".pytest_cache", ".git", ".mypy_cache", ".ruff_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")


# ------------------------------------------------------------------------------------ images


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



# ------------------------------------------------------------------------------------ registry protocol


def registry_client(url: str, *, username: str | None = None, password: str | None = None,
                    refresh_token: str | None = None, auth: RegistryAuth | None = None,
                    timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """An httpx client for a registry: basic authentication, or bearer tokens when the registry asks for them.

    Args:
        url: the registry's base URL.
        username, password: Basic credentials, sent to the registry or to its token realm.
        refresh_token: an OAuth2 refresh token to get tokens with instead (ACR).
        auth: an existing :class:`~blocks.registry_auth.RegistryAuth` (its tokens are reused);
            the credentials above are then ignored.
        timeout: per request.
        transport: an httpx transport (tests).
    """
    if auth is None:
        auth = RegistryAuth(username, password, refresh_token=refresh_token)
    return httpx.Client(base_url=url.rstrip("/"), auth=auth, timeout=timeout, transport=transport)


def registry_host(url: str) -> str:
    """The registry as image references name it, e.g. ``127.0.0.1:5000``."""
    return url.split("://", 1)[-1].rstrip("/")


def push_image(client: httpx.Client, image: ImageBlobs, *, url: str, repository: str, tag: str) -> PublishedImage:
    """Push an assembled image: the blobs the registry lacks, then the manifest under ``tag``.

    Args:
        client: from :func:`registry_client`.
        image: from :func:`build_image`.
        url: the registry's base URL (upload locations may be relative to it).
        repository: e.g. ``sample-app``.
        tag: a human label; the returned digest is what deploys.

    Returns:
        The published image with its registry-qualified repository and manifest digest.
    """
    _push_blob(client, url, repository, image.config)
    _push_blob(client, url, repository, image.layer)
    response = registry_call(client, "PUT", f"/v2/{repository}/manifests/{tag}", content=image.manifest,
                             headers={"Content-Type": OCI_MANIFEST}, what=f"push manifest {repository}:{tag}")
    returned = response.headers.get("Docker-Content-Digest", image.digest)
    if returned != image.digest:
        raise PermanentError(f"registry stored manifest {returned}, expected {image.digest}")
    return PublishedImage(repository=f"{registry_host(url)}/{repository}", tag=tag, digest=image.digest)


def push_with_retries(
    client: httpx.Client,
    image: ImageBlobs,
    *,
    url: str,
    repository: str,
    tag: str,
    attempts: int = PUSH_ATTEMPTS,
    backoff_seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, TransientError, float], None] | None = None,
) -> PublishedImage:
    """:func:`push_image`, tried again after a transient failure (network, 429, 5xx).

    The whole push is repeated: blobs the registry already holds are skipped, an abandoned upload
    is never completed, and the manifest PUT is idempotent, so a retry publishes one image.

    Args:
        client, image, url, repository, tag: as for :func:`push_image`.
        attempts: tries in all.
        backoff_seconds: the first wait, doubled each time with up to 50% jitter; default
            ``DELIVERY_RETRY_BACKOFF_SECONDS`` (the product's retry base, 1 s unless set).
        sleep: how to wait.
        on_retry: told (attempt, error, delay) before each wait, e.g. to log it.

    Raises:
        TransientError: still failing after ``attempts`` tries.
        PermanentError, AuthenticationError: at once, never retried.
    """
    return retry_transient(lambda: push_image(client, image, url=url, repository=repository, tag=tag),
                           attempts=attempts, backoff_seconds=backoff_seconds, sleep=sleep, on_retry=on_retry)


def retry_transient(
    call: Callable[[], T],
    *,
    attempts: int,
    backoff_seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, TransientError, float], None] | None = None,
) -> T:
    """``call()``, tried again after a :class:`TransientError`, ``attempts`` tries in all.

    The first wait is ``backoff_seconds`` (default ``DELIVERY_RETRY_BACKOFF_SECONDS``, 1 s unless set), doubled
    each time with up to 50% jitter; ``on_retry`` is told (attempt, error, delay) before each wait. Any other
    error is raised at once.
    """
    base = backoff_seconds if backoff_seconds is not None else float(
        os.environ.get("DELIVERY_RETRY_BACKOFF_SECONDS", "1"))
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except TransientError as exc:
            if attempt >= attempts:
                raise
            delay = base * 2 ** (attempt - 1) * (1 + random.uniform(0, 0.5))
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _push_blob(client: httpx.Client, url: str, repository: str, data: bytes) -> None:
    digest = _digest(data)
    head = registry_call(client, "HEAD", f"/v2/{repository}/blobs/{digest}", what=f"check blob {digest}",
                         allow=(404,))
    if head.status_code == 200:
        return
    started = registry_call(client, "POST", f"/v2/{repository}/blobs/uploads/", what=f"start upload to {repository}")
    location = started.headers.get("Location")
    if not location:
        raise PermanentError(f"registry answered the upload to {repository} without a Location")
    target = urljoin(url.rstrip("/") + "/", location)
    target += ("&" if "?" in target else "?") + f"digest={digest}"
    registry_call(client, "PUT", target, content=data, headers={"Content-Type": "application/octet-stream"},
                  what=f"upload blob {digest}")


def registry_call(client: httpx.Client, method: str, url: str, *, what: str, allow: tuple[int, ...] = (),
          **kwargs: Any) -> httpx.Response:
    """One registry request, its failures translated into the product's errors."""
    try:
        response = client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise TransientError(f"{what}: registry timed out") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"{what}: registry unreachable ({type(exc).__name__})") from exc
    except DeliveryError as exc:  # from the token realm (blocks.registry_auth): say what it was for
        raise type(exc)(f"{what}: {exc}", reason=exc.reason) from None
    if response.is_success or response.status_code in allow:
        return response
    detail = response.text[:300] if method != "HEAD" else ""
    if response.status_code in (401, 403):
        raise AuthenticationError(f"{what}: registry refused the credentials ({response.status_code})")
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientError(f"{what}: registry answered {response.status_code} {detail}".strip())
    raise PermanentError(f"{what}: registry answered {response.status_code} {detail}".strip())



# ------------------------------------------------------------------------------------ packages


def wheel_name_and_version(filename: str) -> tuple[str, str]:
    """Read the distribution name and version from a wheel's file name (PEP 427).

    Raises:
        InvalidInput: the name is not a wheel's.
    """
    if not filename.endswith(".whl") or filename.count("-") < 4:
        raise InvalidInput(f"{filename!r} is not a wheel file name (name-version-python-abi-platform.whl)")
    name, version = filename.split("-")[:2]
    return name.replace("_", "-").lower(), version


def publish_wheel(folder: Path, distribution: Path, *, allow_overwrite: bool = False) -> PublishedPackage:
    """Copy a wheel into a directory feed, atomically.

    Args:
        folder: the feed folder; created when missing.
        distribution: a built ``.whl`` file.
        allow_overwrite: replace a different file already published under the same name.

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
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / distribution.name
    data = distribution.read_bytes()
    if target.exists():
        if hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest():
            return PublishedPackage(name=name, version=version, location=str(target))
        if not allow_overwrite:
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



# ------------------------------------------------------------------------------------ the steps


def _announce(kind: str, record: PublishedPackage | PublishedImage) -> None:
    print(PUBLISHED_MARKER + json.dumps({"kind": kind, **record.model_dump(mode="json")}), flush=True)


def _publish_packages(args: argparse.Namespace) -> None:
    if not args.feed:
        raise InvalidInput("--feed is empty: set the PACKAGE_FEED variable when queueing the pipeline")
    if args.feed.startswith(("http://", "https://")):
        _upload_packages(args)
        return
    for distribution in args.distributions:
        allow = os.environ.get("PACKAGE_FEED_ALLOW_OVERWRITE", "").lower() in ("1", "true", "yes")
        published = publish_wheel(Path(args.feed), distribution, allow_overwrite=allow)
        print(f"published {published.name} {published.version} to {published.location}")
        _announce("package", published)


def _upload_packages(args: argparse.Namespace) -> None:
    """A feed URL: upload with the PyPI protocol (Azure Artifacts), the token from ``PACKAGE_FEED_PASSWORD``."""
    from blocks.pypi_upload import feed_from_environment, upload_with_retries

    with feed_from_environment(args.feed) as feed:
        for distribution in args.distributions:
            published = upload_with_retries(feed, distribution, on_retry=_warn_retry)
            print(f"published {published.name} {published.version} to {published.location}")
            _announce("package", published)


def _publish_image(args: argparse.Namespace) -> None:
    from delivery.build_settings import parse_build_settings

    if not args.registry:
        raise InvalidInput("--registry is empty: set the IMAGE_REGISTRY variable when queueing the pipeline")
    settings_path = Path(args.settings)
    settings = parse_build_settings(settings_path.read_bytes(), source=str(settings_path))
    if settings.image is None:
        print("no image section in the build settings: nothing to push")
        return
    spec = settings.image
    labels = {"org.opencontainers.image.title": settings.app}
    if args.revision:
        labels["org.opencontainers.image.revision"] = args.revision
    image = build_image(settings_path.parent / spec.context, workdir=spec.workdir, command=spec.command,
                        env=spec.env, port=spec.port, labels=labels)
    # credentials come as secret pipeline variables, never as arguments (which logs would show)
    with registry_client(args.registry, username=os.environ.get("IMAGE_REGISTRY_USERNAME") or None,
                         password=os.environ.get("IMAGE_REGISTRY_PASSWORD"),
                         refresh_token=os.environ.get("IMAGE_REGISTRY_REFRESH_TOKEN") or None) as client:
        published = push_with_retries(client, image, url=args.registry, repository=spec.repository, tag=args.tag,
                                      on_retry=_warn_retry)
    print(f"pushed {published.reference} (tag {published.tag})")
    _announce("image", published)


def _warn_retry(attempt: int, error: TransientError, delay: float) -> None:
    print(f"##[warning] attempt {attempt} failed: {error}; trying again in {delay:.1f}s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a publish step; errors are reported on one line and end the step with exit code 1."""
    from delivery.build_settings import BUILD_SETTINGS_FILE

    parser = argparse.ArgumentParser(prog="python -m blocks.publishing")
    sub = parser.add_subparsers(dest="command", required=True)
    package = sub.add_parser("package", help="copy built wheels into a directory feed, or upload them to a feed URL")
    package.add_argument("--feed", required=True, help="the feed folder, or a feed's upload URL")
    package.add_argument("distributions", nargs="+", type=Path)
    package.set_defaults(run=_publish_packages)
    image = sub.add_parser("image", help="build the image of the build settings and push it")
    image.add_argument("--registry", required=True, help="registry URL")
    image.add_argument("--tag", required=True)
    image.add_argument("--settings", default=BUILD_SETTINGS_FILE)
    image.add_argument("--revision", default=os.environ.get("BUILD_SOURCEVERSION", ""))
    image.set_defaults(run=_publish_image)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except DeliveryError as exc:
        print(f"##[error] {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
