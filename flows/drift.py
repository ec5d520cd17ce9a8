"""The ``drift-check`` flow: compare each environment's live state with Git, reconcile, alert.

For each environment of ``delivery.yaml`` (or the one asked for) it runs the drift check's task
(:func:`tasks.drift.check_environment_drift`: compare, reconcile in ``reconcile`` mode, move the
sync state, record and emit), all from the GitOps repo's head. After the checks, the
``environments`` artifact (``tasks/overview.py``) shows the new sync states.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from delivery.config import load_config
from delivery.settings import block_ref, block_setting
from tasks.drift import check_environment_drift, load_any_block
from tasks.overview import refresh_overview

FLOW_NAME = "drift-check"


@flow(name=FLOW_NAME, log_prints=True)
def drift_check(environment: str | None = None) -> list[dict[str, Any]]:
    """Check every environment of delivery.yaml (or one) for drift between Git and the runtime.

    Args:
        environment: only this environment; default all environments of the promotion path.

    Returns:
        One report per environment (JSON), each with the environment's new sync status; an
        environment skipped because a promotion holds its lock has only ``skipped_reason``.

    Raises:
        InvalidInput: unknown environment or invalid delivery.yaml.
    """
    gitops = load_any_block(block_ref("gitops_repo"), block_setting("gitops_repo"))
    revision = gitops.head()
    config = load_config(gitops.read_config(ref=revision))
    names = [environment] if environment else list(config.path)
    settings = {name: config.environment(name) for name in names}
    futures = [check_environment_drift.submit(name, settings[name], revision) for name in names]
    try:
        return [future.result() for future in futures]
    finally:
        refresh_overview(path=config.path)


__all__ = ["FLOW_NAME", "drift_check"]
