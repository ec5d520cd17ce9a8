"""Loading saved blocks: a missing or wrong block is one of our errors, naming the reference and its setting."""

from __future__ import annotations

import uuid

import pytest
from prefect.blocks.core import Block

from blocks.git_host import GitHost, LocalGitHost
from blocks.gitops_repo import GitOpsRepo
from blocks.loading import load_block, load_configured_block
from delivery.errors import InvalidInput, NotFound

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_a_saved_block_loads_as_its_kind(tmp_path):
    name = f"loading-{uuid.uuid4().hex[:8]}"
    LocalGitHost(root=str(tmp_path / "git")).save(name, overwrite=True)
    loaded = load_block(f"local-git-host/{name}", GitHost)
    assert isinstance(loaded, LocalGitHost) and loaded.root == str(tmp_path / "git")
    assert isinstance(load_block(f"local-git-host/{name}", Block), LocalGitHost)


def test_a_missing_configured_block_names_the_reference_and_the_variable(monkeypatch):
    monkeypatch.setenv("DELIVERY_GITOPS_REPO_BLOCK", "gitops-repo/never-saved")
    with pytest.raises(NotFound) as caught:
        load_configured_block("gitops_repo", GitOpsRepo)
    message = str(caught.value)
    assert "'gitops-repo/never-saved'" in message and "DELIVERY_GITOPS_REPO_BLOCK" in message
    assert "not saved on the Prefect server" in message


def test_the_embedded_default_is_named_when_no_variable_is_set(monkeypatch):
    monkeypatch.delenv("DELIVERY_PACKAGE_FEED_BLOCK", raising=False)
    from blocks.package_feed import PackageFeed

    with pytest.raises(NotFound, match=r"'directory-package-feed/default' \(set by DELIVERY_PACKAGE_FEED_BLOCK\)"):
        load_configured_block("package_feed", PackageFeed)


@pytest.mark.parametrize(("reference", "message"), [
    ("no-slash", "expected '<block-type-slug>/<name>'"),
    ("/name-only", "expected '<block-type-slug>/<name>'"),
    ("gitops-repo/", "expected '<block-type-slug>/<name>'"),
])
def test_a_malformed_reference_is_invalid_input(reference, message):
    with pytest.raises(InvalidInput, match=message):
        load_block(reference, GitOpsRepo, source="delivery.yaml environments.dev.runtime")


def test_a_block_of_another_kind_is_refused(tmp_path):
    name = f"loading-{uuid.uuid4().hex[:8]}"
    LocalGitHost(root=str(tmp_path / "git")).save(name, overwrite=True)
    expected = rf"'local-git-host/{name}' \(set by X\) is a LocalGitHost, not a GitOpsRepo"
    with pytest.raises(InvalidInput, match=expected):
        load_block(f"local-git-host/{name}", GitOpsRepo, source="X")


def test_the_release_flow_reports_a_missing_git_host_block(monkeypatch):
    from flows.release import load_git_host

    monkeypatch.setenv("DELIVERY_GIT_HOST_BLOCK", "local-git-host/not-there")
    with pytest.raises(NotFound, match="DELIVERY_GIT_HOST_BLOCK"):
        load_git_host()
