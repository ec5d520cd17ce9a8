"""The ``environments`` artifact on a real Prefect server, read back over REST as an agent would."""

from __future__ import annotations

import httpx
from support.overview import PATH, deploy, drift_check

from delivery.overview import environment_overview, render_overview
from tasks.overview import OVERVIEW_ARTIFACT_KEY, publish_overview, refresh_overview


def latest(api_url: str) -> dict:
    response = httpx.get(f"{api_url}/artifacts/{OVERVIEW_ARTIFACT_KEY}/latest", timeout=30)
    response.raise_for_status()
    return response.json()


def versions(api_url: str) -> int:
    response = httpx.post(f"{api_url}/artifacts/count", timeout=30,
                          json={"artifacts": {"key": {"any_": [OVERVIEW_ARTIFACT_KEY]}}})
    response.raise_for_status()
    return int(response.json())


def test_the_overview_is_published_under_its_key_and_a_second_publish_writes_nothing(prefect_server, ledger):
    deploy(ledger, "rel-1", "dev", approvers=("user:alice",))
    drift_check(ledger, "dev", found=0)

    publish_overview(path=PATH, ledger=ledger)  # the session's server may hold an older version

    artifact = latest(prefect_server)
    assert artifact["key"] == "environments" and artifact["type"] == "markdown"
    assert artifact["data"] == render_overview(environment_overview(ledger, path=PATH))
    assert "| dev | shop | rel-1 | 1 |" in artifact["data"] and "| prod | - | not deployed |" in artifact["data"]
    count = versions(prefect_server)

    assert publish_overview(path=PATH, ledger=ledger) is False
    assert versions(prefect_server) == count and latest(prefect_server)["id"] == artifact["id"]

    drift_check(ledger, "dev", found=2)
    assert refresh_overview(path=PATH, ledger=ledger) is True
    assert versions(prefect_server) == count + 1
    assert "| Drifted |" in latest(prefect_server)["data"]


def test_refreshing_never_raises(prefect_server, caplog):
    assert refresh_overview(path=PATH, ledger=object()) is False  # not a ledger: logged, not raised
    assert "could not refresh the environments overview" in caplog.text
