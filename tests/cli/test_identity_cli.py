"""``delivery identity``: keygen, register-line, sign, verify and revoke, through the real CLI in a tmp dir.

``sign request --request file.json`` signs the request a person starts from the UI: its digest is
computed from the file, and the output verifies as the flow verifies it (:func:`verify_request`).
``revoke`` runs against a real bare Git repository saved as the stack's GitOps repo block, a temporary
ledger and the session's Prefect server (for the block and the event).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.runtime import wait_for_events
from typer.testing import CliRunner

from blocks import git_repository
from blocks.gitops_repo import GitOpsRepo
from cli.main import app
from delivery.git_grammar import parse_trailers
from delivery.identity import ALLOWED_SIGNERS, Registry, SignedStatement, generate_key
from delivery.intake import parse_request
from delivery.ledger import IDENTITY_REVOKED, Ledger
from delivery.settings import block_setting
from delivery.signing import request_digest, verify_request

runner = CliRunner()
PLAN = "sha256:" + "a" * 64
REQUEST = "sha256:" + "b" * 64


def _ok(*args: str, **kwargs: object) -> str:
    result = runner.invoke(app, ["identity", *args], **kwargs)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An agent key made by ``keygen``, registered in ``identities/allowed_signers`` under tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DELIVERY_SIGNING_KEY", raising=False)
    monkeypatch.delenv("DELIVERY_IDENTITY", raising=False)
    document = json.loads(_ok("keygen", "--identity", "agent:release-manager", "--out", "agent", "--json"))
    (tmp_path / "identities").mkdir()
    (tmp_path / "identities" / "allowed_signers").write_text(document["allowed_signers_line"] + "\n")
    assert document["public_key"] == "agent.pub"
    return tmp_path / "agent"


def test_keygen_prints_the_line_and_where_the_key_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = _ok("keygen", "--identity", "agent:release-manager", "--out", "rm")
    assert "Private key: rm" in text and "identities/allowed_signers" in text
    assert text.strip().splitlines()[-1].startswith('agent:release-manager namespaces="delivery" ssh-ed25519 AAAA')
    again = runner.invoke(app, ["identity", "keygen", "--identity", "agent:release-manager", "--out", "rm"])
    assert again.exit_code == 2
    assert again.output.strip() == "error: key rm: already exists; refusing to overwrite it"


def test_register_line_for_an_existing_ssh_keygen_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    subprocess.run(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", "id"],
                   check=True, timeout=30)
    line = _ok("register-line", "--identity", "user:alice", "--public-key", "id.pub").strip()
    key = " ".join(Path("id.pub").read_text().split()[:2])
    assert line == f'user:alice namespaces="delivery" {key} user:alice'
    document = json.loads(_ok("register-line", "--identity", "user:alice", "--public-key", "id.pub", "--json"))
    assert document == {"allowed_signers_line": line}


def test_sign_approval_then_verify(agent: Path) -> None:
    signed = _ok("sign", "--key", str(agent), "--as", "agent:release-manager", "approval", "--release", "rel-1",
                 "--revision", "2", "--environment", "prod", "--plan-digest", PLAN, "--decision", "approve",
                 "--at", "2026-12-03T02:00:00Z")
    statement = SignedStatement.parse(signed).statement
    assert (statement.kind, statement.decision, statement.at.isoformat()) == (
        "approval", "approve", "2026-12-03T02:00:00+00:00")
    Path("signed.txt").write_text(signed)
    verified = _ok("verify", "--allowed-signers", "identities/allowed_signers", "--signed", "signed.txt")
    assert verified.startswith("verified: approval of rel-1 revision 2 signed by agent:release-manager with key SHA256")
    document = json.loads(_ok("verify", "--allowed-signers", "identities/allowed_signers", "--json", input=signed))
    assert document["verified"] is True and document["principals"] == ["agent:release-manager"]


def test_sign_request_from_the_environment_as_json(agent: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERY_SIGNING_KEY", str(agent))
    monkeypatch.setenv("DELIVERY_IDENTITY", "agent:release-manager")
    document = json.loads(_ok("sign", "request", "--release", "rel-1", "--revision", "1",
                              "--request-digest", REQUEST, "--json"))
    assert document["statement"]["kind"] == "release-request"
    assert SignedStatement.parse(document["signed"]).statement.request_digest == REQUEST
    _ok("verify", "--allowed-signers", "identities/allowed_signers", input=document["signed"])


def test_verify_refused_exits_1_with_the_reason(agent: Path) -> None:
    signed = _ok("sign", "--key", str(agent), "--as", "user:alice", "request", "--release", "rel-1",
                 "--revision", "1", "--request-digest", REQUEST)
    result = runner.invoke(app, ["identity", "verify", "--allowed-signers", "identities/allowed_signers"],
                           input=signed)
    assert result.exit_code == 1
    assert result.output.strip() == ("error: signature refused: signed by agent:release-manager's key "
                                     "but claims user:alice")
    Path("identities/revoked_keys").write_text(Path("agent.pub").read_text())
    revoked = runner.invoke(app, ["identity", "verify", "--allowed-signers", "identities/allowed_signers",
                                  "--revoked", "identities/revoked_keys", "--json"], input=signed)
    assert revoked.exit_code == 1
    assert "was revoked" in json.loads(revoked.stdout)["error"]


@pytest.mark.parametrize(("args", "message"), [
    (["sign", "--key", "missing", "--as", "user:a", "request", "--release", "r", "--revision", "1",
      "--request-digest", REQUEST], "error: key missing: cannot read (No such file or directory)"),
    (["sign", "--key", "agent", "--as", "user:a", "approval", "--release", "r", "--revision", "1",
      "--environment", "prod", "--plan-digest", "sha256:xyz", "--decision", "approve"],
     "error: plan_digest: 'sha256:xyz' is not sha256:<64 lowercase hex digits>"),
    (["sign", "--key", "agent", "--as", "user:a", "request", "--release", "r", "--revision", "1",
      "--request-digest", REQUEST, "--at", "yesterday"], "error: --at 'yesterday': not an ISO 8601 time"),
    (["sign", "--key", "agent.pub", "--as", "user:a", "request", "--release", "r", "--revision", "1",
      "--request-digest", REQUEST], "error: key agent.pub: not an OpenSSH private key"),
    (["register-line", "--identity", "user:a", "--public-key", "rsa.pub"],
     "error: public key: only ssh-ed25519 keys are supported, not ssh-rsa"),
    (["verify", "--allowed-signers", "nowhere"], "error: --allowed-signers nowhere: cannot read"),
    (["verify", "--allowed-signers", "identities/allowed_signers", "--signed", "agent.pub"],
     "error: signature: no -----BEGIN SSH SIGNATURE----- block"),
])
def test_bad_input_is_one_clear_line(agent: Path, args: list[str], message: str) -> None:
    Path("rsa.pub").write_text("ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB rsa@host\n")
    result = runner.invoke(app, ["identity", *args])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(message), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --------------------------------------------------------------------------- sign request --request file.json

# What a person pastes into the UI's Custom run form: no sha256, no trace id (both filled in by the product).
UI_REQUEST = {"release_id": "rel-from-ui", "app": "sample-app", "requested_by": "agent:release-manager",
              "target_environment": "staging",
              "artifacts": [{"artifact_id": "notes", "path": "CHANGES.md", "content": "- from the UI\n",
                             "validation": {"passed": True, "validator": "ci-lint"}}]}


def _sign_file(agent: Path, document: object, *args: str) -> object:
    Path("request.json").write_text(document if isinstance(document, str) else json.dumps(document))
    return runner.invoke(app, ["identity", "sign", "--key", str(agent), "--as", "agent:release-manager", *args,
                               "request", "--request", "request.json"])


def test_sign_request_from_its_file_verifies_against_the_same_request(agent: Path) -> None:
    result = _sign_file(agent, UI_REQUEST)
    assert result.exit_code == 0, result.output
    registry = Registry.parse(Path("identities/allowed_signers").read_text())
    request = parse_request(UI_REQUEST)  # what the flow makes of the same form
    check = verify_request(request, result.stdout, registry=registry)
    assert check.refused is None and check.principals == ("agent:release-manager",), check
    # The UI's one-line input drops the line breaks: it still verifies.
    assert verify_request(request, " ".join(result.stdout.split()), registry=registry).refused is None
    statement = SignedStatement.parse(result.stdout).statement
    assert (statement.release_id, statement.revision, statement.request_digest) == (
        "rel-from-ui", 1, request_digest(request))
    # The control: another request (other content, same id) does not verify with it.
    other = parse_request({**UI_REQUEST, "target_environment": "prod"})
    assert "request_digest" in (verify_request(other, result.stdout, registry=registry).refused or "")


def test_sign_request_file_as_json_gives_the_text_to_paste(agent: Path) -> None:
    result = _sign_file(agent, {**UI_REQUEST, "revision": 3}, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["statement"]["revision"] == 3
    assert document["statement"]["request_digest"] == request_digest(parse_request({**UI_REQUEST, "revision": 3}))
    assert SignedStatement.parse(document["signed"]).statement.release_id == "rel-from-ui"


@pytest.mark.parametrize(("document", "message"), [
    ({key: value for key, value in UI_REQUEST.items() if key != "release_id"},
     'error: --request request.json: release_id: missing; set "release_id" in the request (e.g. "rel-'),
    ({**UI_REQUEST, "release_id": "  "}, "error: --request request.json: release_id: missing"),
    ('{"release_id": "rel-1", "app": ', "error: --request request.json: not JSON (Expecting value: line 1"),
    ("[1, 2]", "error: --request request.json: request: expected a JSON object (a ReleaseRequest), got list"),
    ({**UI_REQUEST, "artifacts": [{**UI_REQUEST["artifacts"][0], "path": "../escape"}]},
     "error: --request request.json: artifacts.0.path: "),
    ({**UI_REQUEST, "requested_by": "user:mallory"},
     "error: --request request.json: requested_by is user:mallory, but you sign as agent:release-manager"),
])
def test_sign_request_file_refused_naming_the_problem(agent: Path, document: object, message: str) -> None:
    result = _sign_file(agent, document)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(message), result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--request", "request.json", "--release", "rel-1"],
     "error: --request: --release come from the request file; leave them out"),
    (["--release", "rel-1", "--revision", "1"],
     "error: give --request <request.json>, or all of --release, --revision and --request-digest"),
    (["--request", "nowhere.json"], "error: --request nowhere.json: cannot read (No such file or directory)"),
])
def test_sign_request_needs_the_file_or_the_three_options(agent: Path, args: list[str], message: str) -> None:
    Path("request.json").write_text(json.dumps(UI_REQUEST))
    result = runner.invoke(app, ["identity", "sign", "--key", str(agent), "--as", "agent:release-manager",
                                 "request", *args])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == message or result.output.startswith(message), result.output


# --------------------------------------------------------------------------- revoke


@dataclass
class GitOps:
    """The stack's GitOps repository (saved as its block), the keys it registers and the ledger."""

    repo: GitOpsRepo
    fingerprints: dict[str, str]
    ledger: Ledger

    def head(self) -> str:
        return self.repo.head()

    def revocations(self) -> list[dict]:
        return self.ledger.actions(action=IDENTITY_REVOKED)


@pytest.fixture
def gitops(prefect_server, ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitOps:
    """alice (one key), bob (two keys), qa-bot; a bare repository saved as the block the flows load."""
    monkeypatch.delenv("DELIVERY_IDENTITY", raising=False)
    keys = tmp_path / "keys"
    keys.mkdir()
    lines = {name: generate_key(keys / name, identity=identity) for name, identity in
             (("alice", "user:alice"), ("bob-laptop", "user:bob"), ("bob-phone", "user:bob"),
              ("qa-bot", "agent:qa-bot"))}
    repo = GitOpsRepo(url=str(tmp_path / "gitops.git"))
    repo.ensure_exists(initial_files={ALLOWED_SIGNERS: ("\n".join(lines.values()) + "\n").encode()})
    name = f"revoke-{uuid.uuid4().hex[:8]}"
    repo.save(name, overwrite=True)
    monkeypatch.setenv(block_setting("gitops_repo"), f"gitops-repo/{name}")
    registry = Registry.parse(repo.read_identities()[0])
    fingerprints = {name: next(key.fingerprint for key in registry.keys if line.split()[-2] in key.public_key)
                    for name, line in lines.items()}
    return GitOps(repo=repo, fingerprints=fingerprints, ledger=ledger)


def test_revoke_commits_records_and_emits_then_a_second_run_is_a_no_op(prefect_server, gitops: GitOps) -> None:
    before = gitops.head()
    document = json.loads(_ok("revoke", "User:Alice", "--as", "user:carol", "--reason", "laptop stolen", "--json"))
    alice = gitops.fingerprints["alice"]
    assert document["revoked"] is True and document["fingerprint"] == alice
    assert document["principals"] == ["user:alice"]

    # one commit on the branch, naming the key, the actor and the reason
    assert gitops.head() == document["commit"] and git_repository.resolve(gitops.repo.url, "main~1") == before
    message = subprocess.run(["git", "--git-dir", gitops.repo.url, "log", "-1", "--format=%B"], check=True,
                             capture_output=True, text=True, timeout=30).stdout
    assert parse_trailers(message) == {"Revoked-Key": [alice], "Revoked-By": ["user:carol"],
                                                 "Reason": ["laptop stolen"], "Trace-Id": [document["trace_id"]]}
    registry = Registry.parse(*gitops.repo.read_identities())
    assert registry.revoked == {alice} and "user:alice" not in registry.identities()

    # the ledger's action, and the event on the same trace
    [row] = gitops.revocations()
    assert (row["release_id"], row["actor"]) == ("identities", "user:carol")
    assert row["reason"] == f"key {alice} of user:alice revoked: laptop stolen"
    assert row["detail"]["commit"] == document["commit"]
    [event] = [e for e in wait_for_events(prefect_server, document["trace_id"], ["IdentityRevoked"])
               if e["event"] == "delivery.IdentityRevoked"]
    assert event["payload"]["fingerprint"] == alice and event["payload"]["actor"] == "user:carol"
    assert event["payload"]["reason"] == "laptop stolen"

    # again, by principal or by fingerprint: nothing written, said so
    again = _ok("revoke", "user:alice", "--as", "user:carol", "--reason", "laptop stolen")
    assert again.strip() == f"key {alice} of user:alice is already revoked in identities/revoked_keys; nothing changed"
    by_fingerprint = json.loads(_ok("revoke", alice, "--as", "user:dan", "--reason", "again", "--json"))
    assert by_fingerprint["revoked"] is False and by_fingerprint["commit"] is None
    assert gitops.head() == document["commit"] and len(gitops.revocations()) == 1


def test_revoke_one_of_two_keys_by_fingerprint_in_a_named_repository(gitops: GitOps) -> None:
    phone = gitops.fingerprints["bob-phone"]
    text = _ok("revoke", phone, "--as", "user:carol", "-m", "phone lost", "--gitops-repo", gitops.repo.url)
    assert text.startswith(f"revoked key {phone} of user:bob in identities/revoked_keys (commit ")
    registry = Registry.parse(*gitops.repo.read_identities())
    assert registry.revoked == {phone} and "user:bob" in registry.identities()  # the laptop key still signs
    # bob has one key left: his identity now names it
    laptop = json.loads(_ok("revoke", "user:bob", "--as", "user:carol", "-m", "left", "--json"))
    assert laptop["fingerprint"] == gitops.fingerprints["bob-laptop"]
    assert [row["detail"]["fingerprint"] for row in gitops.revocations()] == [phone, laptop["fingerprint"]]


@pytest.mark.parametrize(("args", "message"), [
    (["user:mallory", "--as", "user:carol", "--reason", "r"],
     "error: target: 'user:mallory' is not a principal of identities/allowed_signers "
     "(registered: agent:qa-bot, user:alice, user:bob)"),
    (["SHA256:" + "A" * 43, "--as", "user:carol", "--reason", "r"],
     f"error: target: key SHA256:{'A' * 43} is not registered in identities/allowed_signers"),
    (["user:bob", "--as", "user:carol", "--reason", "r"], "error: target: user:bob has 2 keys not revoked (SHA256:"),
    (["user:alice", "--reason", "r"], "error: --as: give your identity (e.g. user:alice), or set DELIVERY_IDENTITY"),
    (["user:alice", "--as", " ", "--reason", "r"], "error: --as: give your identity"),
    (["user:alice", "--as", "user:carol"], "error: --reason: say why the key is revoked"),
    (["user:alice", "--as", "user:carol", "--reason", "  \n "], "error: --reason: say why the key is revoked"),
])
def test_revoke_refuses_clearly_and_writes_nothing(gitops: GitOps, args: list[str], message: str) -> None:
    before = gitops.head()
    result = runner.invoke(app, ["identity", "revoke", *args])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith(message), result.output
    assert gitops.head() == before and gitops.revocations() == []
    assert Registry.parse(*gitops.repo.read_identities()).revoked == frozenset()
