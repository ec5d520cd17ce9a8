import json
import threading
import urllib.error
import urllib.request

import pytest
from sample_app import __version__
from sample_app.server import make_server


@pytest.fixture
def base_url():
    server = make_server(host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.loads(response.read())


def test_healthz_is_ok(base_url):
    assert get(base_url + "/healthz") == (200, {"status": "ok"})


def test_version_reports_the_package_version(base_url):
    status, body = get(base_url + "/version")
    assert status == 200
    assert body["version"] == __version__


def test_unknown_path_is_404(base_url):
    with pytest.raises(urllib.error.HTTPError) as caught:
        get(base_url + "/nope")
    assert caught.value.code == 404
