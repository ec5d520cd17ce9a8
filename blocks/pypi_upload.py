"""The PyPI upload protocol and the simple index, as Azure Artifacts (and pypiserver, and PyPI) speak them.

Kept free of Prefect, like :mod:`blocks.publishing`, so the pipeline's publish step starts fast.

- Upload (the "legacy" API twine uses): one ``multipart/form-data`` POST to the feed's upload URL with
  ``:action=file_upload``, ``protocol_version=1``, the file as ``content`` and the wheel's core metadata
  as form fields (``name``, ``version``, ``filetype=bdist_wheel``, ``pyversion``, ``metadata_version``,
  ``sha256_digest``, ``md5_digest``...), basic authentication with any user name and a token as password.
- A version already present is refused: Azure Artifacts answers 409 Conflict (also for a version that
  was deleted: it never takes it again), pypiserver without ``--overwrite`` answers 409 too, PyPI answers
  400 "File already exists". The answer says nothing about *which* file is there, so the simple index
  (PEP 503) is read: the same file name with the same ``#sha256=`` in its link is the very file (a
  re-publish after a crash), and the upload counts as done; anything else is refused.
- 401/403: the credentials, permanent (the token is never part of a message); 429/5xx and network
  failures: transient, which :func:`upload_with_retries` (the pipeline step) tries again.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.parser import HeaderParser
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx

from blocks.publishing import retry_transient, wheel_name_and_version
from delivery.errors import AuthenticationError, InvalidInput, PermanentError, TransientError
from delivery.models import PublishedPackage

USER_AGENT = "gitops-delivery (PyPI upload protocol)"
UPLOAD_ATTEMPTS = 4
# Form fields of the upload, each with the core metadata field it comes from (as twine sends them).
_SINGLE_FIELDS = {
    "metadata_version": "Metadata-Version", "summary": "Summary", "home_page": "Home-page", "author": "Author",
    "author_email": "Author-email", "maintainer": "Maintainer", "maintainer_email": "Maintainer-email",
    "license": "License", "license_expression": "License-Expression", "keywords": "Keywords",
    "download_url": "Download-URL", "requires_python": "Requires-Python",
    "description_content_type": "Description-Content-Type",
}
_MULTIPLE_FIELDS = {
    "classifiers": "Classifier", "platform": "Platform", "supported_platform": "Supported-Platform",
    "requires_dist": "Requires-Dist", "provides_dist": "Provides-Dist", "obsoletes_dist": "Obsoletes-Dist",
    "requires_external": "Requires-External", "requires": "Requires", "provides": "Provides",
    "obsoletes": "Obsoletes", "project_urls": "Project-URL", "provides_extra": "Provides-Extra",
    "dynamic": "Dynamic", "license_file": "License-File",
}


def normalize_project(name: str) -> str:
    """A project's name as the simple index spells it (PEP 503): ``Demo_Pkg`` -> ``demo-pkg``."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------------------------ the wheel


@dataclass(frozen=True)
class WheelUpload:
    """A wheel ready to upload: its bytes, digests and the form fields describing it."""

    path: Path
    filename: str
    name: str
    version: str
    content: bytes
    sha256: str
    fields: dict[str, str | list[str]]


def read_wheel(distribution: Path) -> WheelUpload:
    """Read a built wheel and the upload form that describes it (from its ``.dist-info/METADATA``).

    Raises:
        InvalidInput: not a wheel, missing, unreadable, or its metadata disagrees with its file name.
    """
    distribution = Path(distribution)
    name, version = wheel_name_and_version(distribution.name)
    if not distribution.is_file():
        raise InvalidInput(f"{distribution} does not exist")
    content = distribution.read_bytes()
    try:
        with zipfile.ZipFile(distribution) as archive:
            candidates = [n for n in archive.namelist()
                          if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(candidates) != 1:
                raise InvalidInput(f"{distribution.name}: expected one *.dist-info/METADATA, found {len(candidates)}")
            text = archive.read(candidates[0]).decode("utf-8")
    except (zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{distribution.name} is not a readable wheel ({exc})") from None
    metadata = HeaderParser().parsestr(text)
    meta_name, meta_version = metadata.get("Name"), metadata.get("Version")
    if not meta_name or not meta_version:
        raise InvalidInput(f"{distribution.name}: its METADATA names no Name or Version")
    if normalize_project(meta_name) != normalize_project(name) or meta_version != version:
        raise InvalidInput(f"{distribution.name}: its METADATA says {meta_name} {meta_version}, "
                           f"its file name {name} {version}")
    sha256 = hashlib.sha256(content).hexdigest()
    fields: dict[str, str | list[str]] = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": re.sub(r"[^A-Za-z0-9.]+", "-", meta_name),  # twine's safe name
        "version": meta_version,
        "filetype": "bdist_wheel",
        "pyversion": distribution.name.split("-")[-3],  # the python tag, e.g. py3 (twine's pyversion of a wheel)
        "sha256_digest": sha256,
        "md5_digest": hashlib.md5(content).hexdigest(),  # noqa: S324 - part of the protocol, not security
        "blake2_256_digest": hashlib.blake2b(content, digest_size=32).hexdigest(),
    }
    for field, header in _SINGLE_FIELDS.items():
        if (value := metadata.get(header)) is not None:
            fields[field] = value
    for field, header in _MULTIPLE_FIELDS.items():
        if values := metadata.get_all(header):
            fields[field] = list(values)
    if _version_tuple(fields.get("metadata_version", "0")) < (2, 4):
        fields.pop("license_file", None)  # setuptools writes License-File under 2.1; twine leaves it out there too
    description = metadata.get_payload() or metadata.get("Description")
    if description:
        fields["description"] = description
    return WheelUpload(path=distribution, filename=distribution.name, name=name, version=version, content=content,
                       sha256=sha256, fields=fields)


def _version_tuple(text: object) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", str(text))[:2])


# ------------------------------------------------------------------------------------ the index


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._text = dict(attrs).get("href") or "", []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


@dataclass(frozen=True)
class IndexFile:
    """One file of a project page of the simple index."""

    filename: str
    url: str
    sha256: str | None


def parse_project_page(html: str, *, page_url: str) -> dict[str, IndexFile]:
    """The files a PEP 503 project page links to, by file name, with the ``#sha256=`` of their link."""
    parser = _Links()
    parser.feed(html)
    files = {}
    for href, text in parser.links:
        url, fragment = urldefrag(urljoin(page_url, href))
        filename = text or url.rstrip("/").rsplit("/", 1)[-1]
        algorithm, _, value = fragment.partition("=")
        files[filename] = IndexFile(filename=filename, url=url,
                                    sha256=value.lower() if algorithm == "sha256" and value else None)
    return files


# ------------------------------------------------------------------------------------ the feed


def _check_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{what} {url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise InvalidInput(f"{what} must not carry credentials: give the user name and token separately")
    return url if url.endswith("/") else url + "/"


class PythonFeed:
    """One Python feed: its upload URL, its simple index, the credentials.

    Args:
        upload_url: where uploads are POSTed, e.g. ``https://pkgs.dev.azure.com/o/p/_packaging/f/pypi/upload/``.
        index_url: the simple index, e.g. ``.../pypi/simple/``.
        username: any name for Azure Artifacts; the token is what counts.
        token: the password or personal access token.
        timeout: seconds per request.
        transport: an httpx transport (tests).
    """

    def __init__(self, upload_url: str, index_url: str, *, username: str, token: str | None, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.upload_url = _check_url(upload_url, "upload URL")
        self.index_url = _check_url(index_url, "index URL")
        self._token = token or ""
        auth = httpx.BasicAuth(username, self._token) if token else None
        self._client = httpx.Client(auth=auth, timeout=timeout, transport=transport, follow_redirects=False,
                                    headers={"User-Agent": USER_AGENT})

    def __enter__(self) -> PythonFeed:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._client.close()

    def project_url(self, name: str) -> str:
        """The project's page in the simple index."""
        return urljoin(self.index_url, normalize_project(name) + "/")

    def _scrub(self, text: str) -> str:
        text = re.sub(r"<[^>]+>", " ", text)  # error pages are HTML; their text is what helps
        text = " ".join(text.split())[:300]
        return text.replace(self._token, "***") if self._token else text

    def _call(self, method: str, url: str, *, what: str, allow: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise TransientError(f"{what}: the package feed timed out ({self._where(url)})") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"{what}: the package feed is unreachable ({self._where(url)}: "
                                 f"{type(exc).__name__})") from exc
        status = response.status_code
        if response.is_success or status in allow:
            return response
        if status in (401, 403):
            raise AuthenticationError(
                f"{what}: the package feed refused the credentials ({status} from {self._where(url)}); check the "
                "token: a personal access token with Packaging (Read & write) scope, not expired, of a user who "
                "may contribute to the feed")
        detail = self._scrub(response.text)
        if status == 429 or status >= 500:
            wait = response.headers.get("Retry-After")
            raise TransientError(f"{what}: the package feed answered {status}"
                                 f"{f' (retry after {wait}s)' if wait else ''} {detail}".strip())
        if 300 <= status < 400:
            raise PermanentError(f"{what}: the package feed redirected ({status}) to "
                                 f"{response.headers.get('Location', '?')}; give the final URL")
        raise PermanentError(f"{what}: the package feed answered {status} {detail}".strip())

    @staticmethod
    def _where(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"

    def files(self, name: str) -> dict[str, IndexFile]:
        """The files the index lists for project ``name`` (none when it has no such project)."""
        page = self.project_url(name)
        response = self._call("GET", page, what=f"read the index of {name}", allow=(404, 301, 302, 303, 307, 308),
                              headers={"Accept": "text/html"})
        if response.status_code != 200:  # 404, or a redirect elsewhere (pypiserver's fallback to PyPI): not here
            return {}
        return parse_project_page(response.text, page_url=page)

    def has(self, name: str, version: str) -> bool:
        """Whether the index lists a wheel of ``name`` at ``version``."""
        for filename in self.files(name):
            if filename.endswith(".whl") and filename.count("-") >= 4:
                found_name, found_version = wheel_name_and_version(filename)
                if normalize_project(found_name) == normalize_project(name) and found_version == version:
                    return True
        return False

    def upload(self, distribution: Path) -> PublishedPackage:
        """Upload one wheel; the same file again (same name and sha256) is a no-op.

        Returns:
            Name, version and location: the project's page in the index, the file name as fragment.

        Raises:
            InvalidInput: not a wheel, or unreadable.
            PermanentError: the feed holds this version already (another file, or one it cannot confirm is
                this one), or refused the upload for good.
            AuthenticationError: the credentials were refused.
            TransientError: network, 429, 5xx.
        """
        wheel = read_wheel(distribution)
        published = PublishedPackage(name=wheel.name, version=wheel.version,
                                     location=f"{self.project_url(wheel.name)}#{wheel.filename}")
        response = self._call("POST", self.upload_url, what=f"upload {wheel.filename}", allow=(400, 409),
                              data=wheel.fields,
                              files={"content": (wheel.filename, wheel.content, "application/octet-stream")})
        if response.status_code == 409 or (response.status_code == 400 and "already exist" in response.text.lower()):
            self._already_present(wheel, response.status_code)
            return published
        if response.status_code == 400:
            raise PermanentError(f"upload {wheel.filename}: the package feed refused it (400) "
                                 f"{self._scrub(response.text)}".strip())
        return published

    def _already_present(self, wheel: WheelUpload, status: int) -> None:
        """The feed refused a version it holds: accept it only when the index shows this very file."""
        feed = self._where(self.upload_url)
        listed = self.files(wheel.name).get(wheel.filename)
        raise_the_version = f"version {wheel.version} of {wheel.name} is published; raise the version"
        if listed is None:
            raise PermanentError(
                f"package feed {feed} refused {wheel.filename} ({status} Conflict): it holds version {wheel.version} "
                f"of {wheel.name} already, not as this file name (or held it: Azure Artifacts never takes a deleted "
                "version again); raise the version")
        if listed.sha256 is None:
            raise PermanentError(
                f"package feed {feed} already holds a {wheel.filename} and its index gives no sha256 to compare, so "
                f"it cannot be confirmed to be this file; {raise_the_version}")
        if listed.sha256 != wheel.sha256:
            raise PermanentError(
                f"package feed {feed} already holds a different {wheel.filename} (sha256 {listed.sha256[:12]}, this "
                f"one {wheel.sha256[:12]}): {raise_the_version}")
        # the very same bytes: a publish that went through before a crash, done already


def upload_with_retries(
    feed: PythonFeed,
    distribution: Path,
    *,
    attempts: int = UPLOAD_ATTEMPTS,
    backoff_seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, TransientError, float], None] | None = None,
) -> PublishedPackage:
    """:meth:`PythonFeed.upload`, tried again after a transient failure (network, 429, 5xx).

    A retry after an upload the feed stored but did not confirm meets a conflict, which the index
    resolves as the same file: one publish.

    Args:
        attempts: tries in all.
        backoff_seconds: the first wait, doubled each time with up to 50% jitter; default
            ``DELIVERY_RETRY_BACKOFF_SECONDS`` (1 s unless set).
        sleep: how to wait.
        on_retry: told (attempt, error, delay) before each wait.
    """
    return retry_transient(lambda: feed.upload(distribution), attempts=attempts, backoff_seconds=backoff_seconds,
                           sleep=sleep, on_retry=on_retry)


def feed_from_environment(upload_url: str, environ: Mapping[str, str] | None = None) -> PythonFeed:
    """The feed the pipeline's publish step uploads to: ``--feed`` and the ``PACKAGE_FEED_*`` variables.

    ``PACKAGE_FEED_INDEX`` (the simple index), ``PACKAGE_FEED_USERNAME`` (any name) and
    ``PACKAGE_FEED_PASSWORD`` (the token: a secret variable, never an argument, which logs would show).

    Raises:
        InvalidInput: ``PACKAGE_FEED_INDEX`` is missing and cannot be derived from the upload URL.
    """
    env = os.environ if environ is None else environ
    index = env.get("PACKAGE_FEED_INDEX") or default_index_url(upload_url)
    if not index:
        raise InvalidInput(f"PACKAGE_FEED_INDEX is empty and {upload_url!r} does not end in /pypi/upload/: set the "
                           "feed's simple index URL")
    return PythonFeed(upload_url, index, username=env.get("PACKAGE_FEED_USERNAME") or "delivery",
                      token=env.get("PACKAGE_FEED_PASSWORD") or None)


def default_index_url(upload_url: str) -> str | None:
    """Azure Artifacts' index next to its upload URL (``.../pypi/upload/`` -> ``.../pypi/simple/``), or None."""
    stripped = upload_url.rstrip("/")
    return stripped.removesuffix("/upload") + "/simple/" if stripped.endswith("/pypi/upload") else None


__all__ = ["IndexFile", "PythonFeed", "WheelUpload", "default_index_url", "feed_from_environment",
           "normalize_project", "parse_project_page", "read_wheel", "upload_with_retries"]
