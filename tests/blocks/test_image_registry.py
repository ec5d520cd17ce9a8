"""OciImageRegistry and the image builder against the real Debian docker-registry, pulled back with skopeo."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from blocks.image_registry import OciImageRegistry, build_image
from cli.local_registry import start_registry
from delivery.errors import AuthenticationError, NotFound, TransientError

SAMPLE_SRC = Path(__file__).resolve().parents[2] / "examples" / "sample-app" / "src"


def context(tmp_path: Path, text: str = "print('hi')\n") -> Path:
    folder = tmp_path / "ctx"
    (folder / "pkg").mkdir(parents=True, exist_ok=True)
    (folder / "pkg" / "main.py").write_text(text)
    (folder / "pkg" / "__pycache__").mkdir(exist_ok=True)
    (folder / "pkg" / "__pycache__" / "main.cpython-311.pyc").write_bytes(os.urandom(16))
    return folder


def test_the_same_files_give_the_same_digest(tmp_path):
    first = build_image(context(tmp_path), command=["python", "-m", "pkg.main"], port=8080)
    (tmp_path / "ctx" / "pkg" / "__pycache__" / "main.cpython-311.pyc").write_bytes(os.urandom(16))  # ignored
    again = build_image(context(tmp_path), command=["python", "-m", "pkg.main"], port=8080)
    changed = build_image(context(tmp_path, "print('bye')\n"), command=["python", "-m", "pkg.main"], port=8080)
    assert first.digest == again.digest
    assert changed.digest != first.digest


def test_an_image_is_pushed_and_pulled_back_by_digest(tmp_path, registry):
    image = build_image(SAMPLE_SRC, command=["python", "-m", "sample_app"], port=8080, env={"PYTHONPATH": "/app"},
                        labels={"org.opencontainers.image.revision": "abc"})
    block = OciImageRegistry(url=registry.url)
    published = block.push_image(image, repository="demo/sample-app", tag="v1")
    assert published.reference == f"{registry.host}/demo/sample-app@{image.digest}"
    assert block.has(published) and block.resolve("demo/sample-app", "v1") == image.digest
    assert block.push_image(image, repository="demo/sample-app", tag="v1") == published  # idempotent

    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{published.reference}"],
                             capture_output=True, text=True, timeout=60)
    assert inspect.returncode == 0, inspect.stderr
    facts = json.loads(inspect.stdout)
    assert facts["Digest"] == image.digest and facts["Os"] == "linux"
    assert "PYTHONPATH=/app" in facts["Env"]
    copy = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{published.reference}",
                           f"oci:{tmp_path / 'pulled'}:sample"], capture_output=True, text=True, timeout=60)
    assert copy.returncode == 0, copy.stderr
    index = json.loads((tmp_path / "pulled" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.digest  # the very manifest we pushed
    layer_digest = block.manifest("demo/sample-app", image.digest)["layers"][0]["digest"]
    extracted = tmp_path / "rootfs"
    extracted.mkdir()
    blob = tmp_path / "pulled" / "blobs" / "sha256" / layer_digest.removeprefix("sha256:")
    subprocess.run(["tar", "-xzf", str(blob), "-C", str(extracted)], check=True)
    server = "sample_app/server.py"
    assert (extracted / "app" / server).read_bytes() == (SAMPLE_SRC / server).read_bytes()


def test_unknown_images_are_not_found(registry):
    block = OciImageRegistry(url=registry.url)
    with pytest.raises(NotFound):
        block.manifest("demo/nothing", "sha256:" + "0" * 64)
    assert block.resolve("demo/nothing", "v1") is None


def test_refused_credentials_and_server_errors_are_translated(tmp_path):
    image = build_image(context(tmp_path), command=["true"])
    block = OciImageRegistry(url="http://registry.invalid", username="bot", password="pw")

    def refuse(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"].startswith("Basic ")
        return httpx.Response(401, headers={"Www-Authenticate": 'Basic realm="r"'})

    with pytest.raises(AuthenticationError, match="401"):
        block.push_image(image, repository="x", tag="t", transport=httpx.MockTransport(refuse))
    with pytest.raises(TransientError, match="503"):
        block.push_image(image, repository="x", tag="t",
                         transport=httpx.MockTransport(lambda r: httpx.Response(503, text="busy")))


def test_an_unreachable_registry_is_transient(tmp_path):
    with start_registry(tmp_path / "gone") as short_lived:
        url = short_lived.url
    with pytest.raises(TransientError, match="unreachable"):
        OciImageRegistry(url=url, timeout_seconds=2).resolve("x", "t")


def test_the_local_registry_stops_by_pid_and_keeps_its_images_across_restarts(tmp_path, registry):
    image = build_image(context(tmp_path), command=["true"])
    with start_registry(tmp_path / "reg") as first:
        OciImageRegistry(url=first.url).push_image(image, repository="keep", tag="t")
    with pytest.raises(ProcessLookupError):
        os.kill(first.pid, 0)
    with start_registry(tmp_path / "reg") as second:
        assert OciImageRegistry(url=second.url).resolve("keep", "t") == image.digest


def test_the_publish_step_retries_a_transient_registry_failure_and_not_a_permanent_one(tmp_path, registry):
    from blocks.publishing import push_with_retries, registry_client

    image = build_image(context(tmp_path), command=["true"])
    upstream = httpx.HTTPTransport()
    seen: list[tuple[str, int]] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        # The first manifest PUT meets a 503 from "the load balancer"; everything else reaches the registry.
        if request.method == "PUT" and "/manifests/" in request.url.path and not seen:
            seen.append((request.method, 503))
            return httpx.Response(503, text="upstream busy")
        return upstream.handle_request(request)

    retries: list[tuple[int, str]] = []
    with registry_client(registry.url, transport=httpx.MockTransport(flaky)) as client:
        published = push_with_retries(client, image, url=registry.url, repository="retried", tag="t",
                                      sleep=lambda _s: None, on_retry=lambda n, e, _d: retries.append((n, str(e))))
    assert published.digest == image.digest and seen == [("PUT", 503)]
    assert [n for n, _ in retries] == [1] and "503" in retries[0][1]
    assert OciImageRegistry(url=registry.url).resolve("retried", "t") == image.digest

    calls: list[int] = []
    with registry_client("http://registry.invalid", transport=httpx.MockTransport(
            lambda r: calls.append(1) or httpx.Response(401))) as client, pytest.raises(AuthenticationError):
        push_with_retries(client, image, url="http://registry.invalid", repository="x", tag="t", sleep=lambda _s: None)
    assert len(calls) == 1  # refused credentials are never retried
