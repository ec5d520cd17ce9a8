"""Releasing as the Prefect UI's form does: JSON without digests, a source ref, refusals in the state message.

What a person sees of a refused run is its state message (the run page's header, the runs list): it
must be the one sentence naming the field, read here over REST as the UI reads it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from git import Repo
from support.release import APP, PLANNER, ReleaseStack
from support.runtime import wait_for_events

from delivery.errors import InvalidInput
from delivery.models import PullRequestStatus
from delivery.plan import PlanState


def run_state(prefect_server: str, flow_run_id: Any) -> dict[str, Any]:
    """The run's state as the UI reads it: ``GET /api/flow_runs/{id}``."""
    response = httpx.get(f"{prefect_server}/flow_runs/{flow_run_id}", timeout=30)
    response.raise_for_status()
    return response.json()["state"]


def form_artifact(**overrides: Any) -> dict[str, Any]:
    """An artifact as a person fills the form: text content, no digest."""
    body = {"artifact_id": "notes", "path": "CHANGES.md", "content": "- from the form\n",
            "validation": {"passed": True, "validator": "person"}}
    return {**body, **overrides}


REFUSED = [
    ("path escaping the repository", {"artifacts": [form_artifact(path="../x")]},
     "InvalidInput: artifacts.0.path: '../x' escapes the repository or is not a file inside it"),
    ("wrong digest", {"artifacts": [form_artifact(sha256="0" * 64)]},
     "InvalidInput: artifacts.0.sha256: sha256 mismatch: declared " + "0" * 64 + ", the content's digest is "
     + hashlib.sha256(b"- from the form\n").hexdigest() + " (leave it empty to compute it)"),
    ("neither artifacts nor source", {},
     "InvalidInput: artifacts, source.ref: give exactly one of artifacts or source.ref (neither was given)"),
    ("both artifacts and source", {"artifacts": [form_artifact()], "source": {"ref": "main"}},
     "InvalidInput: artifacts, source.ref: give exactly one of artifacts or source.ref (both were given)"),
    ("unknown source ref", {"source": {"ref": "feature/ghost"}},
     "InvalidInput: source.ref: 'feature/ghost' is no branch, tag or commit of repository 'sample-app'"),
    ("unknown target environment", {"artifacts": [form_artifact()], "target_environment": "moon"},
     "InvalidInput: target_environment: unknown environment 'moon'"),
]


@pytest.mark.parametrize(("case", "fields", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_refused_request_ends_failed_with_one_sentence_naming_the_field(
        release_stack: ReleaseStack, prefect_server, case, fields, message):
    from flows.release import release

    before = release_stack.snapshot()
    body = {"release_id": "rel-form-bad", "app": APP, "requested_by": PLANNER, "target_environment": "dev", **fields}
    state = release(request=body, return_state=True)
    shown = run_state(prefect_server, state.state_details.flow_run_id)
    assert shown["type"] == "FAILED", case
    assert shown["message"].startswith(message), (case, shown["message"])
    assert "\n" not in shown["message"] and "Traceback" not in shown["message"]
    with pytest.raises(InvalidInput):  # the caller in Python still gets the error itself
        state.result()
    assert release_stack.snapshot() == before


def test_a_request_without_digests_is_released_with_the_digests_computed(release_stack: ReleaseStack,
                                                                        prefect_server):
    from flows.release import release
    from tasks.summary import artifact_key

    text = '"""The sample service."""\n\n__version__ = "0.4.0"\n'
    body = {"release_id": "rel-form-ok", "app": APP, "requested_by": PLANNER, "target_environment": "dev",
            "artifacts": [form_artifact(artifact_id="app-version", path="src/sample_app/__init__.py", content=text),
                          form_artifact()]}
    state = release(request=body, return_state=True)
    assert state.is_completed(), state
    summary = state.result()
    assert release_stack.host.read_file(APP, "src/sample_app/__init__.py", ref="main") == text.encode()
    assert summary.commit.trailers["Artifact-Id"] == ["app-version", "notes"]
    computed = {"app-version": hashlib.sha256(text.encode()).hexdigest(),
                "notes": hashlib.sha256(b"- from the form\n").hexdigest()}
    # Recorded: a trailer per artifact in the release commit itself, as git has it ...
    with Repo(release_stack.host.clone_url(APP)) as repo:
        message = repo.commit(summary.commit.sha).message
    assert all(f"\nArtifact-Sha256: {name} {sha256}\n" in message + "\n" for name, sha256 in computed.items()), message
    # ... the CommitCreated event ...
    events = wait_for_events(prefect_server, summary.trace_id, ["CommitCreated"])
    [created] = [event for event in events if event["event"] == "delivery.CommitCreated"]
    assert created["payload"]["artifact_sha256"] == computed
    # ... and the release summary a person opens on the run.
    latest = httpx.get(f"{prefect_server}/artifacts/{artifact_key('rel-form-ok')}/latest", timeout=30).json()
    assert "Artifacts (sha256): `app-version` `{app-version}`, `notes` `{notes}`".format(**computed) in latest["data"]
    # The digest the flow computed is the one the ledger's plan was made from.
    plan = release_stack.ledger.plans()[0]
    assert plan.release_id == "rel-form-ok" and plan.state is PlanState.DEPLOYED


def test_an_existing_branch_is_released_and_its_commit_recorded(release_stack: ReleaseStack, prefect_server):
    from flows.release import release

    host = release_stack.host
    text = '"""The sample service."""\n\n__version__ = "0.5.0"\n'
    feature = host.commit_files(APP, branch="feature/bump", files={"src/sample_app/__init__.py": text.encode()},
                                message="Bump the version", trailers=(), base="main")
    main_before = host.resolve(APP, "main")
    body = {"release_id": "rel-form-ref", "app": APP, "requested_by": PLANNER, "target_environment": "dev",
            "source": {"ref": "feature/bump"}}
    state = release(request=body, return_state=True)
    assert state.is_completed(), run_state(prefect_server, state.state_details.flow_run_id)
    summary = state.result()

    # The release branch starts at the branch's commit and adds the trailers, no file changes.
    assert summary.commit.parent == feature.sha
    assert summary.commit.trailers["Source-Ref"] == ["feature/bump"]
    assert summary.commit.trailers["Source-Commit"] == [feature.sha]
    assert host.read_file(APP, "src/sample_app/__init__.py", ref="release/rel-form-ref") == text.encode()
    pr = host.get_pull_request(APP, summary.pull_request.number)
    assert pr.status is PullRequestStatus.MERGED and pr.checks_passed
    assert "Source: feature/bump at " + feature.sha in pr.description
    # Merged into main; the build ran on the merge, which holds the branch's commit.
    with Repo(host.clone_url(APP)) as repo:
        merge = repo.commit(summary.merge.merge_sha)
        assert [p.hexsha for p in merge.parents] == [main_before, summary.commit.sha]
        assert repo.is_ancestor(feature.sha, summary.merge.merge_sha)
        assert "Source-Ref: feature/bump" in merge.message
    assert summary.build.commit == summary.merge.merge_sha == host.resolve(APP, "main")
    assert host.read_file(APP, "src/sample_app/__init__.py", ref="main") == text.encode()
    assert [(e.environment, e.state) for e in summary.promotion.environments] == [("dev", PlanState.DEPLOYED)]
    shown = run_state(prefect_server, state.state_details.flow_run_id)
    assert shown["type"] == "COMPLETED"
