"""The ``environments`` artifact: every environment at a glance, kept current by the flows.

The rows and their markdown come from the ledger alone (:mod:`delivery.overview`). The artifact is
republished after each environment a release promotes (deployed, failed, rejected:
``flows/promotion.py:promote_path``), after each on-demand rollback
(``flows/rollback.py:roll_back_environment``) and after each drift check
(``flows/drift.py:drift_check``). ``GET /api/artifacts/environments/latest`` returns it; its
``data`` is the markdown. A publish whose markdown equals the latest version's writes nothing.

Publishing is best effort, as the incident views are (``tasks/incidents.py``): a failure to write
the overview is logged and never fails the promotion, rollback or check that asked for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from delivery.ledger import Ledger
from delivery.overview import environment_overview, render_overview

OVERVIEW_ARTIFACT_KEY = "environments"

logger = logging.getLogger(__name__)


def publish_overview(*, path: Iterable[str] | None = None, ledger: Ledger | None = None) -> bool:
    """Write the ``environments`` markdown artifact from the ledger, unless its latest version says the same.

    Args:
        path: the promotion path (``delivery.yaml``), so environments never deployed show too.
        ledger: the ledger; default the configured one.

    Returns:
        True when a new version was written, False when the latest one already had this content.
    """
    from prefect.artifacts import Artifact, create_markdown_artifact

    rows = environment_overview(ledger or Ledger(), path=path)
    markdown = render_overview(rows)
    latest = Artifact.get(OVERVIEW_ARTIFACT_KEY)
    if latest is not None and latest.data == markdown:
        return False
    deployed = sum(1 for row in rows if row.deployed)
    create_markdown_artifact(markdown=markdown, key=OVERVIEW_ARTIFACT_KEY,
                             description=f"Every environment at a glance: {deployed} deployed of {len(rows)} "
                                         "(environment, application). `delivery status` prints the same.")
    return True


def refresh_overview(*, path: Iterable[str] | None = None, ledger: Ledger | None = None) -> bool:
    """:func:`publish_overview`, best effort: never raises (the next change rebuilds it anyway).

    Returns:
        True when a new version was written.
    """
    try:
        return publish_overview(path=path, ledger=ledger)
    except Exception as exc:  # noqa: BLE001 - best effort, logged
        logger.warning("could not refresh the environments overview: %s: %s", type(exc).__name__, exc)
        return False


__all__ = ["OVERVIEW_ARTIFACT_KEY", "publish_overview", "refresh_overview"]
