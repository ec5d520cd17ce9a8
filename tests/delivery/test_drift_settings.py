"""An environment's ``drift`` section of delivery.yaml, validated when the file is loaded (pure, no servers)."""

from __future__ import annotations

import pytest

from delivery.config import parse_config
from delivery.drift import DriftMode, DriftSettings
from delivery.errors import InvalidInput


def _config(drift: dict | None) -> dict:
    dev = {"namespace": "app-dev", "runtime": "kubernetes-runtime/local"}
    prod = {"namespace": "app-prod", "runtime": "kubernetes-runtime/local"}
    if drift is not None:
        prod["drift"] = drift
    return {"path": ["dev", "prod"], "environments": {"dev": dev, "prod": prod}}


def test_drift_settings_defaults():
    settings = parse_config(_config(None)).environment("prod").drift
    assert settings.mode is DriftMode.RECONCILE and settings.ignore == () and settings.degraded_after == 3


@pytest.mark.parametrize(
    "raw,field",
    [
        ({"mode": "sometimes"}, "environments.prod.drift.mode"),
        ({"degraded_after": 0}, "environments.prod.drift.degraded_after"),
        ({"ignored": ["spec.replicas"]}, "environments.prod.drift.ignored"),
        # The ignore-rule grammar is checked when delivery.yaml is loaded, not at the first drift check.
        ({"ignore": ["spec..x"]}, "environments.prod.drift.ignore.0"),
        ({"ignore": [""]}, "environments.prod.drift.ignore.0"),
    ],
)
def test_bad_drift_settings_name_the_field(raw, field):
    with pytest.raises(InvalidInput) as info:
        parse_config(_config(raw))
    assert field in str(info.value)


def test_drift_settings_from_the_config_are_the_drift_checks_model():
    settings = parse_config(_config({"mode": "detect", "ignore": ["spec.replicas"], "degraded_after": 5}))
    assert settings.environment("prod").drift == DriftSettings(
        mode=DriftMode.DETECT, ignore=("spec.replicas",), degraded_after=5)
