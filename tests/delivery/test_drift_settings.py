"""An environment's ``drift`` section of delivery.yaml, validated (pure, no servers)."""

from __future__ import annotations

import pytest

from delivery.drift import DriftMode, DriftSettings
from delivery.errors import InvalidInput


def test_drift_settings_defaults():
    settings = DriftSettings.parse(None, environment="dev")
    assert settings.mode is DriftMode.RECONCILE and settings.ignore == () and settings.degraded_after == 3


@pytest.mark.parametrize(
    "raw,field",
    [
        ({"mode": "sometimes"}, "environments.prod.drift.mode"),
        ({"degraded_after": 0}, "environments.prod.drift.degraded_after"),
        ({"ignored": ["spec.replicas"]}, "environments.prod.drift.ignored"),
        ({"ignore": ["spec..x"]}, "environments.prod.drift.ignore"),
    ],
)
def test_bad_drift_settings_name_the_field(raw, field):
    with pytest.raises(InvalidInput) as info:
        DriftSettings.parse(raw, environment="prod")
    assert field in str(info.value)


def test_drift_settings_from_a_mapping_or_a_model_with_the_same_fields():
    settings = DriftSettings.parse({"mode": "detect", "ignore": ["spec.replicas"], "degraded_after": 5},
                                   environment="dev")
    assert settings == DriftSettings(mode=DriftMode.DETECT, ignore=("spec.replicas",), degraded_after=5)
    assert DriftSettings.parse(settings, environment="dev") is settings
