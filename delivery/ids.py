"""Identifiers: release, trace and artifact ids, and the rules they follow."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple
from uuid import UUID

from pydantic import AfterValidator

# A release id becomes a git branch (release/<id>), a Prefect tag and a Kubernetes annotation
# value, so it keeps to the characters all three accept.
RELEASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
ARTIFACT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


def new_release_id() -> str:
    """Return a fresh release id such as ``rel-20261127-1a2b3c4d``."""
    return f"rel-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


def new_trace_id() -> str:
    """Return a fresh trace id (32 hex digits, the W3C trace-id size)."""
    return secrets.token_hex(16)


def release_id_for_run(run_id: UUID, created: datetime) -> str:
    """The release id of a request sent without one, derived from its flow run: ``rel-<date>-<8 hex>``.

    A run restarts from the top after an approval wait or a crash, with the same raw parameters: a
    random id would give each start a new release (branch, plan, name, tag). Derived from the run,
    every start of it gets the same id. The hex part hashes the whole run id: Prefect's ids are
    UUIDv7, whose leading digits are a timestamp shared by runs created together.

    Args:
        run_id: the flow run's id.
        created: when the run was created (its date is the id's date, as for :func:`new_release_id`).
    """
    created = created if created.tzinfo else created.replace(tzinfo=UTC)
    return f"rel-{created.astimezone(UTC):%Y%m%d}-{hashlib.sha256(run_id.bytes).hexdigest()[:8]}"


def trace_id_for_run(run_id: UUID) -> str:
    """The trace id of a request sent without one: its flow run's id, 32 hex digits (the W3C trace-id size)."""
    return run_id.hex


def check_release_id(value: str) -> str:
    """Validate a release id.

    Args:
        value: the candidate id.

    Returns:
        The id unchanged.

    Raises:
        ValueError: when the id cannot serve as a branch name, tag and annotation.
    """
    if not RELEASE_ID_PATTERN.fullmatch(value) or ".." in value or value.endswith((".", ".lock")):
        raise ValueError(
            f"release_id {value!r} is invalid: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..' and not ending in '.' or '.lock'"
        )
    return value


# A model field holding a release id: checked by check_release_id wherever one is read.
ReleaseId = Annotated[str, AfterValidator(check_release_id)]


def normalise_identity(identity: str) -> str:
    """Fold an identity for comparison: case and all whitespace are ignored."""
    return "".join(identity.split()).casefold()


# The key of one wait for a decision (Prefect's pause key): the UI shows it, the client finds the environment in it.
WAIT_KEY_PATTERN = re.compile(r"approval-(?P<environment>.+)-r(?P<revision>\d+)-(?P<attempt>\d+)")


def approval_wait_key(environment: str, revision: int, attempt: int) -> str:
    """The key of one wait for a decision: environment, revision and how many decisions came before."""
    return f"approval-{environment}-r{revision}-{attempt}"


def waiting_environment(pause_key: str | None) -> str | None:
    """The environment a wait is for, from its key (:func:`approval_wait_key`); None for another pause."""
    match = WAIT_KEY_PATTERN.fullmatch(pause_key or "")
    return match["environment"] if match else None


# A release's flow runs are tagged release:<id> and trace:<id>: the UI filters on them, and the
# client, the status view and recovery find a release's runs (and its trace) by them.
RELEASE_TAG_PREFIX = "release:"
TRACE_TAG_PREFIX = "trace:"


# The release flow's name (``flows/release.py``): its runs are found by it and by their tags.
RELEASE_FLOW = "release"


def release_tag(release_id: str) -> str:
    """The tag of a release's flow runs: ``release:<id>``."""
    return f"{RELEASE_TAG_PREFIX}{release_id}"


def trace_tag(trace_id: str) -> str:
    """The tag carrying a release's trace id on its flow runs: ``trace:<id>``."""
    return f"{TRACE_TAG_PREFIX}{trace_id}"


def release_tags(release_id: str, trace_id: str) -> list[str]:
    """Both tags of a release's flow run: ``release:<id>`` and ``trace:<id>``."""
    return [release_tag(release_id), trace_tag(trace_id)]


def _tagged(tags: Iterable[str] | None, prefix: str) -> str | None:
    return next((tag[len(prefix):] for tag in tags or () if tag.startswith(prefix)), None)


def release_of_tags(tags: Iterable[str] | None) -> str | None:
    """The release id of a flow run's tags (its first ``release:<id>``), or None."""
    return _tagged(tags, RELEASE_TAG_PREFIX)


def trace_of_tags(tags: Iterable[str] | None) -> str | None:
    """The trace id of a flow run's tags (its first ``trace:<id>``), or None."""
    return _tagged(tags, TRACE_TAG_PREFIX)


# The fields naming a release's deployment to one environment, wherever they are carried: a plan,
# a stage's input (DeployTarget and the models built on it), a raw JSON parameter.
RELEASE_KEY_FIELDS = ("release_id", "revision", "environment", "trace_id")


def plan_id(release_id: str, revision: int, environment: str) -> str:
    """The ledger key of a plan: ``<release>/r<revision>/<environment>`` (stored in ledgers: never change it)."""
    return f"{release_id}/r{revision}/{environment}"


def release_fields(source: Any) -> dict[str, Any]:
    """The release key's fields that ``source`` carries (a mapping's keys or an object's attributes), not None."""
    if isinstance(source, Mapping):
        found = {name: source.get(name) for name in RELEASE_KEY_FIELDS}
    else:
        found = {name: getattr(source, name, None) for name in RELEASE_KEY_FIELDS}
    return {name: value for name, value in found.items() if value is not None}


class ReleaseKey(NamedTuple):
    """Which release, at which revision, in which environment, under which trace: each None when unknown."""

    release_id: str | None = None
    revision: int | None = None
    environment: str | None = None
    trace_id: str | None = None

    @classmethod
    def of(cls, source: Any) -> ReleaseKey:
        """The key's fields of a typed model or raw JSON; a value of the wrong type is not an id."""
        kinds = {"release_id": str, "revision": int, "environment": str, "trace_id": str}
        fields = release_fields(source)
        return cls(**{name: value for name, value in fields.items() if isinstance(value, kinds[name])})

    @property
    def plan_id(self) -> str | None:
        """The plan this key names (:func:`plan_id`), or None when release, revision or environment is unknown."""
        if self.release_id is None or self.revision is None or self.environment is None:
            return None
        return plan_id(self.release_id, self.revision, self.environment)
