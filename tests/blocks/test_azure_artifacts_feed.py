"""AzureArtifactsFeed: wheels uploaded with the PyPI protocol to a real index server (pypiserver), pip installs them.

The server requires authentication for everything (uploads, the index, downloads: a private feed, as
Azure's), with an htpasswd file made by passlib, and refuses overwrites (409), as Azure does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.package_index import TOKEN, USER, IndexServer, free_port, start_package_index

from blocks.azure_artifacts_feed import AzureArtifactsFeed
from blocks.package_feed import PackageFeed
from blocks.publishing import main
from blocks.pypi_upload import PythonFeed, read_wheel, upload_with_retries
from delivery.errors import AuthenticationError, InvalidInput, PermanentError, TransientError, validated
from delivery.models import PublishedPackage


@pytest.fixture(scope="module")
def pypi(tmp_path_factory) -> Iterator[IndexServer]:
    """pypiserver on 127.0.0.1: authentication for update, list and download; no overwrite; stopped by pid."""
    with start_package_index(tmp_path_factory.mktemp("pypiserver"), users={USER: TOKEN}) as running:
        yield running


def build_wheel(folder: Path, name: str, version: str = "1.0.0", value: int = 1) -> Path:
    """A real wheel of a one-module package, built by pip as the pipeline's package job builds it."""
    module = name.replace("-", "_")
    source = folder / f"src-{name}-{version}-{value}"
    (source / "src" / module).mkdir(parents=True)
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\ndescription = "A package of the feed tests"\n'
        'requires-python = ">=3.9"\nclassifiers = ["Programming Language :: Python :: 3", '
        '"License :: OSI Approved :: MIT License"]\n')
    (source / "src" / module / "__init__.py").write_text(f"VALUE = {value}\n")
    dist = folder / f"dist-{name}-{version}-{value}"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(dist), str(source)],
                   check=True, capture_output=True, timeout=120, env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"})
    (wheel,) = dist.glob("*.whl")
    return wheel


def server_files(server: IndexServer) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(server.packages.iterdir())}


# ------------------------------------------------------------------------------------ against pypiserver


def test_a_published_wheel_is_installed_by_pip_from_the_index(pypi, tmp_path):
    wheel = build_wheel(tmp_path, "feed-demo", value=41)
    feed = pypi.feed()
    assert isinstance(feed, PackageFeed)
    assert not feed.has(PublishedPackage(name="feed-demo", version="1.0.0", location="x"))

    published = feed.publish(wheel)
    assert published == PublishedPackage(name="feed-demo", version="1.0.0",
                                         location=f"{pypi.index}feed-demo/#{wheel.name}")
    assert server_files(pypi).get(wheel.name) == wheel.read_bytes()
    assert feed.has(published)
    assert not feed.has(PublishedPackage(name="feed-demo", version="1.0.1", location="x"))
    with PythonFeed(feed.upload_url, feed.index_url, username=USER, token=TOKEN) as client:
        assert client.files("Feed_Demo")[wheel.name].sha256 == read_wheel(wheel).sha256  # the index's #sha256=

    target = tmp_path / "installed"
    index = pypi.index.replace("http://", f"http://{USER}:{TOKEN}@")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
         "--no-cache-dir", "--index-url", index, "--no-deps", "--target", str(target), "feed-demo==1.0.0"],
        capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr
    imported = subprocess.run([sys.executable, "-c", "import feed_demo; print(feed_demo.VALUE)"],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(target)})
    assert imported.stdout.strip() == "41", imported.stderr


def test_a_published_version_is_refused_to_another_file_and_the_same_file_again_is_a_no_op(pypi, tmp_path):
    first = build_wheel(tmp_path, "feed-conflict", value=1)
    other = build_wheel(tmp_path, "feed-conflict", value=2)
    assert first.name == other.name and first.read_bytes() != other.read_bytes()
    feed = pypi.feed()
    published = feed.publish(first)

    statuses: list[int] = []
    upstream = httpx.HTTPTransport()

    def recording(request: httpx.Request) -> httpx.Response:
        response = upstream.handle_request(request)
        statuses.append(response.status_code)
        return response

    assert feed.publish(first, transport=httpx.MockTransport(recording)) == published
    assert statuses == [409, 200]  # the server refused it; the index showed the very same file: done already
    statuses.clear()
    with pytest.raises(PermanentError) as refused:
        feed.publish(other, transport=httpx.MockTransport(recording))
    assert statuses == [409, 200]
    message = str(refused.value)
    assert f"already holds a different {first.name}" in message
    assert "version 1.0.0 of feed-conflict is published; raise the version" in message
    assert not isinstance(refused.value, TransientError) and not refused.value.retryable
    assert server_files(pypi)[first.name] == first.read_bytes()  # untouched


def test_refused_credentials_are_permanent_and_never_echo_the_token(pypi, tmp_path):
    wheel = build_wheel(tmp_path, "feed-secret")
    wrong = "pat-wrong-0123456789"
    for feed in (pypi.feed(token=wrong), AzureArtifactsFeed(upload_url=f"{pypi.url}/", index_url=pypi.index,
                                                            token=TOKEN)):  # the right token, another user
        with pytest.raises(AuthenticationError) as refused:
            feed.publish(wheel)
        message = str(refused.value)
        assert "refused the credentials (403" in message and "Packaging (Read & write)" in message
        assert wrong not in message and TOKEN not in message and not refused.value.retryable
        with pytest.raises(AuthenticationError):
            feed.has(PublishedPackage(name="feed-secret", version="1.0.0", location="x"))  # a private index
    with PythonFeed(f"{pypi.url}/", pypi.index, username=USER, token=None) as anonymous, \
            pytest.raises(AuthenticationError, match=r"\(401 from"):
        anonymous.upload(wheel)
    assert wheel.name not in server_files(pypi)


def test_the_pipeline_step_uploads_to_a_feed_url_with_the_block_s_variables(pypi, tmp_path, capsys, monkeypatch):
    feed = pypi.feed()
    variables = feed.pipeline_variables()
    assert variables == {"PACKAGE_FEED": f"{pypi.url}/", "PACKAGE_FEED_INDEX": pypi.index,
                         "PACKAGE_FEED_USERNAME": USER}  # the token is not a queue-time variable
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PACKAGE_FEED_PASSWORD", TOKEN)  # a secret variable of the pipeline
    wheel = build_wheel(tmp_path, "feed-step")
    assert main(["package", "--feed", variables["PACKAGE_FEED"], str(wheel)]) == 0
    out = capsys.readouterr().out
    assert '##delivery[published]{"kind": "package", "name": "feed-step", "version": "1.0.0"' in out
    assert main(["package", "--feed", variables["PACKAGE_FEED"], str(wheel)]) == 0  # a re-run: a no-op
    assert feed.has(PublishedPackage(name="feed-step", version="1.0.0", location="x"))

    other = build_wheel(tmp_path, "feed-step", value=2)
    assert main(["package", "--feed", variables["PACKAGE_FEED"], str(other)]) == 1
    assert f"##[error] PermanentError: package feed {pypi.url}/ already holds a different" in capsys.readouterr().err
    monkeypatch.setenv("PACKAGE_FEED_PASSWORD", "pat-not-this-one")
    assert main(["package", "--feed", variables["PACKAGE_FEED"], str(other)]) == 1
    err = capsys.readouterr().err
    assert "##[error] AuthenticationError" in err and "pat-not-this-one" not in err


def test_an_upload_stored_but_unconfirmed_is_retried_into_a_no_op(pypi, tmp_path):
    wheel = build_wheel(tmp_path, "feed-retry")
    upstream = httpx.HTTPTransport()
    lost: list[int] = []

    def lossy(request: httpx.Request) -> httpx.Response:
        # the first upload reaches the server, its answer is lost: the load balancer answers 502
        response = upstream.handle_request(request)
        if request.method == "POST" and not lost:
            response.read()
            lost.append(response.status_code)
            return httpx.Response(502, text="bad gateway")
        return response

    retries: list[str] = []
    with PythonFeed(f"{pypi.url}/", pypi.index, username=USER, token=TOKEN,
                    transport=httpx.MockTransport(lossy)) as feed:
        published = upload_with_retries(feed, wheel, sleep=lambda _s: None,
                                        on_retry=lambda _n, error, _d: retries.append(str(error)))
    assert lost == [200] and len(retries) == 1 and "502" in retries[0]
    assert published.name == "feed-retry" and server_files(pypi)[wheel.name] == wheel.read_bytes()


# ------------------------------------------------------------------------------------ answers pypiserver never gives


def _answering(upload: httpx.Response, index: httpx.Response | None = None) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        return upload if request.method == "POST" else (index or httpx.Response(404))

    return httpx.MockTransport(handle)


@pytest.fixture(scope="module")
def mock_wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("mock"), "feed-mock")


AZURE = {"organization": "contoso", "project": "Delivery", "feed": "apps", "token": TOKEN}


@pytest.mark.parametrize(("upload", "index", "error", "message"), [
    (httpx.Response(409, text="The feed already contains file 'x' in package 'feed-mock 1.0.0'."), None,
     PermanentError, "it holds version 1.0.0 of feed-mock already, not as this file name"),
    (httpx.Response(409), httpx.Response(200, text='<a href="../../f/feed_mock-1.0.0-py3-none-any.whl">'
                                                   'feed_mock-1.0.0-py3-none-any.whl</a>'),
     PermanentError, "its index gives no sha256 to compare"),
    (httpx.Response(400, text="File already exists. See https://pypi.org/help/#file-name-reuse"), None,
     PermanentError, "not as this file name"),
    (httpx.Response(400, text="Invalid value for classifiers"), None, PermanentError, "refused it \\(400\\)"),
    (httpx.Response(401, text=f"bad token {TOKEN}"), None, AuthenticationError, "refused the credentials \\(401"),
    (httpx.Response(429, headers={"Retry-After": "7"}), None, TransientError, "429 \\(retry after 7s\\)"),
    (httpx.Response(503, text=f"<h1>unavailable</h1> for {TOKEN}"), None, TransientError, "503 unavailable for \\*"),
])
def test_feed_answers_become_the_product_s_errors(mock_wheel, upload, index, error, message):
    with pytest.raises(error, match=message) as caught:
        AzureArtifactsFeed(**AZURE).publish(mock_wheel, transport=_answering(upload, index))
    assert TOKEN not in str(caught.value)


def test_the_upload_is_the_form_twine_sends(mock_wheel):
    import base64
    import hashlib
    from email.parser import BytesParser
    from email.policy import HTTP

    seen: list[httpx.Request] = []

    def accept(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    feed = AzureArtifactsFeed(**AZURE, username="anyone")
    published = feed.publish(mock_wheel, transport=httpx.MockTransport(accept))
    (request,) = seen
    assert (request.method, str(request.url)) == ("POST", feed.upload_url)
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + request.headers["Content-Type"].encode() + b"\r\n\r\n" + request.read())
    form: dict[str, list] = {}
    for part in message.iter_parts():
        value = part.get_content() if part.get_filename() is None else (part.get_filename(), part.get_content())
        form.setdefault(part.get_param("name", header="content-disposition"), []).append(value)
    data = mock_wheel.read_bytes()
    assert form["content"] == [(mock_wheel.name, data)]
    single = {key: values[0] for key, values in form.items() if len(values) == 1}
    assert single[":action"] == "file_upload" and single["protocol_version"] == "1"
    assert (single["name"], single["version"], single["filetype"], single["pyversion"]) == (
        "feed-mock", "1.0.0", "bdist_wheel", "py3")
    assert single["metadata_version"] in ("2.1", "2.2", "2.3", "2.4") and single["requires_python"] == ">=3.9"
    assert single["sha256_digest"] == hashlib.sha256(data).hexdigest()
    assert single["md5_digest"] == hashlib.md5(data).hexdigest()
    assert form["classifiers"] == ["Programming Language :: Python :: 3", "License :: OSI Approved :: MIT License"]
    assert published.location == ("https://pkgs.dev.azure.com/contoso/Delivery/_packaging/apps/pypi/simple/"
                                  f"feed-mock/#{mock_wheel.name}")


def test_an_unreachable_feed_is_transient(mock_wheel):
    feed = AzureArtifactsFeed(upload_url=f"http://127.0.0.1:{free_port()}/", index_url="http://127.0.0.1:9/simple/",
                              token=TOKEN, timeout_seconds=2)
    with pytest.raises(TransientError, match="unreachable"):
        feed.publish(mock_wheel)


def test_a_file_that_is_no_wheel_is_refused_before_any_request(tmp_path):
    never = httpx.MockTransport(lambda request: pytest.fail(f"no request expected: {request.url}"))
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "demo-1.0.0-py3-none-any.whl").write_bytes(b"not a zip")
    for path, message in ((tmp_path / "notes.txt", "not a wheel"), (tmp_path / "demo-1.0.0-py3-none-any.whl",
                                                                      "not a readable wheel"),
                          (tmp_path / "gone-1.0.0-py3-none-any.whl", "does not exist")):
        with pytest.raises(InvalidInput, match=message):
            AzureArtifactsFeed(**AZURE).publish(path, transport=never)


# ------------------------------------------------------------------------------------ configuration


def test_the_urls_default_to_azure_s():
    feed = AzureArtifactsFeed(organization="contoso", project="Web Apps", feed="apps", token=TOKEN)
    base = "https://pkgs.dev.azure.com/contoso/Web%20Apps/_packaging/apps/pypi"
    assert (feed.upload_url, feed.index_url) == (f"{base}/upload/", f"{base}/simple/")
    organization_feed = AzureArtifactsFeed(organization="contoso", feed="shared", token=TOKEN)
    assert organization_feed.upload_url == "https://pkgs.dev.azure.com/contoso/_packaging/shared/pypi/upload/"
    given = AzureArtifactsFeed(upload_url="https://pkgs.dev.azure.com/o/_packaging/f/pypi/upload", token=TOKEN)
    assert given.index_url == "https://pkgs.dev.azure.com/o/_packaging/f/pypi/simple/"
    assert TOKEN not in repr(feed) and TOKEN not in str(feed.pipeline_variables())


@pytest.mark.parametrize(("changes", "message"), [
    ({"bogus": 1}, "bogus: Extra inputs are not permitted"),
    ({"Token": "x"}, "Token: Extra inputs are not permitted"),
    ({"token": None}, "token: Input should be a valid string"),
    ({"organization": "no/slash"}, "organization: String should match pattern"),
    ({"feed": "has space"}, "feed: String should match pattern"),
    ({"project": "a/b"}, "project: 'a/b' is not an Azure DevOps project name"),
    ({"timeout_seconds": 0}, "timeout_seconds: Input should be greater than 0"),
    ({"upload_url": "ftp://feed.example/upload/"}, "upload_url: 'ftp://feed.example/upload/' is not an http"),
    ({"upload_url": "not a url"}, "upload_url: 'not a url' is not an http"),
    ({"upload_url": "http://feed.example/upload/"}, "upload_url: .*plain http would send the token in clear"),
    ({"index_url": "https://user:pw@feed.example/simple/"}, "index_url: must not carry credentials"),
    ({"upload_url": "https://feed.example/upload/?x=1"}, "upload_url: .*takes no query or fragment"),
    ({"organization": None}, "give upload_url, or organization and feed"),
    ({"organization": None, "upload_url": "https://feed.example/"}, "give index_url: https://feed.example/ is not"),
])
def test_bad_configuration_is_refused_naming_the_field(changes, message):
    data = {key: value for key, value in {**AZURE, **changes}.items() if value is not None or key == "token"}
    with pytest.raises(InvalidInput, match=f"^azure-artifacts-feed: .*{message}"):
        validated(AzureArtifactsFeed, data, context="azure-artifacts-feed")


def test_a_saved_block_s_slug_is_accepted_and_another_refused():
    assert AzureArtifactsFeed.model_validate({**AZURE, "block_type_slug": "azure-artifacts-feed"}).feed == "apps"
    with pytest.raises(InvalidInput, match="block_type_slug 'directory-package-feed' is not"):
        validated(AzureArtifactsFeed, {**AZURE, "block_type_slug": "directory-package-feed"}, context="feed")
