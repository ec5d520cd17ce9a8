"""The sample application as the image runs it: ``python -m sample_app`` from its source folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from delivery.build_settings import BUILD_SETTINGS_FILE, parse_build_settings

SAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "sample-app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_service_answers_healthz_and_version_the_way_its_image_starts_it():
    settings = parse_build_settings((SAMPLE_APP / BUILD_SETTINGS_FILE).read_bytes())
    assert settings.image is not None and settings.image.command == ["python", "-m", "sample_app"]
    port = free_port()
    env = {**os.environ, **settings.image.env, "PYTHONPATH": str(SAMPLE_APP / settings.image.context),
           "PORT": str(port), "RELEASE_ID": "rel-sample"}
    process = subprocess.Popen([sys.executable, *settings.image.command[1:]], env=env, cwd=SAMPLE_APP,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "the sample app did not start listening"
                time.sleep(0.05)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        version = httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).json()
        assert version == {"version": "0.1.0", "release": "rel-sample"}
        assert httpx.get(f"http://127.0.0.1:{port}/missing", timeout=5).status_code == 404
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_declared_port_matches_the_service_default():
    settings = parse_build_settings((SAMPLE_APP / BUILD_SETTINGS_FILE).read_bytes())
    source = (SAMPLE_APP / "src" / "sample_app" / "server.py").read_text()
    assert settings.image.port == 8080 and "DEFAULT_PORT = 8080" in source
    project = (SAMPLE_APP / "pyproject.toml").read_text()
    assert 'name = "sample-app"' in project and settings.package.name == "sample-app"
    assert yaml.safe_load((SAMPLE_APP / BUILD_SETTINGS_FILE).read_text())["test"]["junit"] == settings.test.junit
