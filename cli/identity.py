"""``delivery identity keygen|register-line|sign|verify|revoke``: keys and signed statements (delivery/identity.py).

A person registers an existing key with ``register-line`` and signs with ``ssh-keygen -Y sign -n delivery``
or ``sign``; an agent gets a key with ``keygen`` and signs with ``sign``. Every line printed for
``identities/allowed_signers`` goes into the GitOps repository by a reviewed commit, like any change.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from delivery.errors import InvalidInput, invalid_input
from delivery.identity import (
    ALLOWED_SIGNERS,
    Registry,
    SignatureRefused,
    SignedStatement,
    Statement,
    generate_key,
    registry_line,
    sign,
)
from delivery.ids import normalise_identity
from delivery.models import Decision, utcnow
from delivery.signing import request_digest as digest_of
from delivery.signing import request_to_sign

identity_app = typer.Typer(help="Signing keys and signed approvals and release requests.", no_args_is_help=True)
sign_app = typer.Typer(help="Sign a statement: `sign --key K --as I approval ...` or `... request ...`.",
                       no_args_is_help=True)
identity_app.add_typer(sign_app, name="sign")

JsonOption = typer.Option(False, "--json", help="Print one JSON document (for agents).")
IdentityOption = typer.Option(..., "--identity", help="The identity the key belongs to, e.g. agent:release-manager.")
ReleaseOption = typer.Option(..., "--release", help="The release id.")
RevisionOption = typer.Option(..., "--revision", help="The plan revision (from 1).")
AtOption = typer.Option(None, "--at", help="When it is said (ISO 8601, e.g. 2026-12-03T02:00:00Z); default now.")


def _fail(exc: Exception, as_json: bool) -> None:
    # One line, no traceback: a refusal exits 1, other bad input 2 (as delivery incidents does).
    message = str(invalid_input(exc) if isinstance(exc, ValidationError) else exc)
    if as_json:
        typer.echo(json.dumps({"error": message, "type": type(exc).__name__}))
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1 if isinstance(exc, SignatureRefused) else 2)


def _run(as_json: bool, action: Callable[[], tuple[dict[str, Any], str]]) -> None:
    try:
        document, text = action()
    except (InvalidInput, ValidationError) as exc:
        _fail(exc, as_json)
        return
    typer.echo(json.dumps(document) if as_json else text)


@identity_app.command("keygen")
def keygen(identity: str = IdentityOption,
           out: Path = typer.Option(..., "--out", help="Where to write the private key (the .pub goes beside it)."),
           as_json: bool = JsonOption) -> None:
    """Create an Ed25519 key pair and print the line that registers it."""
    def action() -> tuple[dict[str, Any], str]:
        line = generate_key(out, identity=identity)
        public = out.with_suffix(".pub")
        text = (f"Private key: {out} (keep it secret; mode 0600)\nPublic key:  {public}\n"
                f"Add this line to {ALLOWED_SIGNERS} in the GitOps repository:\n{line}")
        return {"allowed_signers_line": line, "private_key": str(out), "public_key": str(public)}, text
    _run(as_json, action)


@identity_app.command("register-line")
def register_line(identity: str = typer.Option(..., "--identity", help="Your identity, e.g. user:alice."),
                  public_key: Path = typer.Option(..., "--public-key",
                                                  help="The public key, e.g. ~/.ssh/id_ed25519.pub."),
                  as_json: bool = JsonOption) -> None:
    """Print the allowed_signers line that registers an existing OpenSSH Ed25519 key."""
    def action() -> tuple[dict[str, Any], str]:
        try:
            key_text = public_key.expanduser().read_text()
        except OSError as exc:
            raise InvalidInput(f"--public-key {public_key}: cannot read ({exc.strerror or exc})") from exc
        line = registry_line(key_text, identity=identity)
        return {"allowed_signers_line": line}, line
    _run(as_json, action)


@sign_app.callback()
def sign_options(ctx: typer.Context,
                 key: Path = typer.Option(..., "--key", envvar="DELIVERY_SIGNING_KEY",
                                          help="Your OpenSSH Ed25519 private key."),
                 signer: str = typer.Option(..., "--as", envvar="DELIVERY_IDENTITY",
                                            help="The identity you sign as, e.g. user:alice."),
                 as_json: bool = JsonOption) -> None:
    """Sign an approval or a release request with an OpenSSH Ed25519 key."""
    ctx.obj = {"key": key, "signer": signer, "json": as_json}


def _sign(ctx: typer.Context, as_json: bool, at: str | None, **fields: Any) -> None:
    as_json = as_json or ctx.obj["json"]

    def action() -> tuple[dict[str, Any], str]:
        statement = Statement(signer=ctx.obj["signer"], at=_at(at), **fields)
        signed = sign(statement, key_path=ctx.obj["key"].expanduser())
        return {"signed": signed.render(), **signed.model_dump(mode="json")}, signed.render().rstrip("\n")
    _run(as_json, action)


@sign_app.command("approval")
def sign_approval(ctx: typer.Context, release: str = ReleaseOption, revision: int = RevisionOption,
                  environment: str = typer.Option(..., "--environment", help="The environment approved."),
                  plan_digest: str = typer.Option(..., "--plan-digest", help="sha256:<64 hex> of the plan."),
                  decision: Decision = typer.Option(..., "--decision", help="approve or reject."),
                  at: str = AtOption, as_json: bool = JsonOption) -> None:
    """Sign an approval (or rejection) of a plan revision for one environment."""
    _sign(ctx, as_json, at, kind="approval", release_id=release, revision=revision, environment=environment,
          plan_digest=plan_digest, decision=decision)


@sign_app.command("request")
def sign_request(ctx: typer.Context,
                 request: Path = typer.Option(None, "--request",
                                              help="The ReleaseRequest JSON you will start (e.g. paste into the UI's "
                                                   "Custom run form); its digest is computed for you."),
                 release: str = typer.Option(None, "--release", help="The release id (without --request)."),
                 revision: int = typer.Option(None, "--revision", help="The revision (without --request)."),
                 request_digest: str = typer.Option(None, "--request-digest",
                                                    help="sha256:<64 hex> of the request (without --request)."),
                 at: str = AtOption, as_json: bool = JsonOption) -> None:
    """Sign a release request: its JSON file (--request), or its id, revision and digest.

    Paste the output, whole, into the request's `signature` field.
    """
    try:
        fields = _request_fields(ctx.obj["signer"], request, release=release, revision=revision,
                                 request_digest=request_digest)
    except (InvalidInput, ValidationError) as exc:
        _fail(exc, as_json or ctx.obj["json"])
        return
    _sign(ctx, as_json, at, kind="release-request", **fields)


def _request_fields(signer: str, file: Path | None, *, release: str | None, revision: int | None,
                    request_digest: str | None) -> dict[str, Any]:
    """The statement's fields of a request: from its file, or from the three options (not both)."""
    given = [option for option, value in (("--release", release), ("--revision", revision),
                                          ("--request-digest", request_digest)) if value is not None]
    if file is None:
        if len(given) < 3:
            raise InvalidInput("give --request <request.json>, or all of --release, --revision and --request-digest")
        return {"release_id": release, "revision": revision, "request_digest": request_digest}
    if given:
        raise InvalidInput(f"--request: {', '.join(given)} come from the request file; leave them out")
    try:
        document = json.loads(_read(file, "--request"))
    except ValueError as exc:
        raise InvalidInput(f"--request {file}: not JSON ({exc})") from None
    try:
        found = request_to_sign(document)
    except InvalidInput as exc:
        raise InvalidInput(f"--request {file}: {exc}") from None
    if normalise_identity(found.requested_by) != normalise_identity(signer):
        raise InvalidInput(f"--request {file}: requested_by is {found.requested_by}, but you sign as {signer}: "
                           "the planner who requests the release signs it")
    return {"release_id": found.release_id, "revision": found.revision, "request_digest": digest_of(found)}


def _at(at: str | None) -> datetime:
    if at is None:
        return utcnow()
    try:
        moment = datetime.fromisoformat(at)
    except ValueError as exc:
        raise InvalidInput(f"--at {at!r}: not an ISO 8601 time such as 2026-12-03T02:00:00Z") from exc
    # Statements are in UTC: a time without a zone is read as UTC, not as the host's zone.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@identity_app.command("verify")
def verify(allowed_signers: Path = typer.Option(..., "--allowed-signers", help="The allowed_signers file."),
           revoked: Path = typer.Option(None, "--revoked", help="The revoked_keys file."),
           signed: str = typer.Option("-", "--signed", help="The signed statement file; - reads standard input."),
           as_json: bool = JsonOption) -> None:
    """Verify a signed statement; exit 1 with the reason when it is refused."""
    def action() -> tuple[dict[str, Any], str]:
        registry = Registry.parse(_read(allowed_signers, "--allowed-signers"),
                                  _read(revoked, "--revoked") if revoked else "")
        text = sys.stdin.read() if signed == "-" else _read(Path(signed), "--signed")
        statement = SignedStatement.parse(text)
        key = registry.verify(statement)
        document = {"verified": True, "signer": statement.statement.signer, "fingerprint": key.fingerprint,
                    "principals": list(key.principals), "statement": statement.statement.model_dump(mode="json")}
        s = statement.statement
        return document, f"verified: {s.kind} of {s.release_id} revision {s.revision} signed by {s.signer} " \
                         f"with key {key.fingerprint}"
    _run(as_json, action)


def _read(path: Path, option: str) -> str:
    try:
        return path.expanduser().read_text()
    except OSError as exc:
        raise InvalidInput(f"{option} {path}: cannot read ({exc.strerror or exc})") from exc


@identity_app.command("revoke")
def revoke(target: str = typer.Argument(..., help="The identity (e.g. user:alice) or key fingerprint (SHA256:...)."),
           actor: str = typer.Option(None, "--as", envvar="DELIVERY_IDENTITY", help="Your identity (audited)."),
           reason: str = typer.Option(None, "--reason", "-m", help="Why the key is revoked (audited)."),
           gitops_repo: str = typer.Option(None, "--gitops-repo",
                                           help="The GitOps repository (URL or path); default the one the stack's "
                                                "flows load (the gitops-repo block, DELIVERY_GITOPS_REPO_BLOCK)."),
           api_url: str = typer.Option(None, "--api-url", envvar="PREFECT_API_URL", help="The Prefect API (…/api)."),
           as_json: bool = JsonOption) -> None:
    """Revoke a signing key: one commit to identities/revoked_keys, a ledger record and an IdentityRevoked event."""
    # Imported here: only this command needs the stack (its API, ledger and GitOps repository).
    from delivery.errors import DeliveryError

    try:
        if not actor or not actor.strip():
            raise InvalidInput("--as: give your identity (e.g. user:alice), or set DELIVERY_IDENTITY")
        if not reason or not reason.strip():
            raise InvalidInput("--reason: say why the key is revoked (kept in the commit and the ledger)")
        done = _revoke_in_stack(target, actor=actor, reason=reason, gitops_repo=gitops_repo, api_url=api_url)
    except (InvalidInput, ValidationError) as exc:
        _fail(exc, as_json)
        return
    except DeliveryError as exc:  # no stack, no saved block, a push that kept losing races: not bad input
        typer.echo(json.dumps({"error": str(exc), "type": type(exc).__name__}) if as_json else f"error: {exc}",
                   err=not as_json)
        raise typer.Exit(1) from None
    typer.echo(done.model_dump_json() if as_json else done.message())


def _revoke_in_stack(target: str, *, actor: str, reason: str, gitops_repo: str | None, api_url: str | None) -> Any:
    from blocks.gitops_repo import GitOpsRepo
    from blocks.loading import load_configured_block
    from cli.client import DeliveryClient
    from cli.stack_info import find_stack
    from delivery.api_auth import prefect_client_settings
    from delivery.ledger import Ledger
    from delivery.revocation import revoke_key

    stack = find_stack(api_url)
    with DeliveryClient(api_url) as client, prefect_client_settings(
            client.api_url, auth_string=stack.auth_string(client.api_url)):
        # the ledger is opened for writing (created if missing) only once a stack's API was found
        ledger = Ledger(stack.require_ledger())
        repo = GitOpsRepo(url=gitops_repo) if gitops_repo else load_configured_block("gitops_repo", GitOpsRepo)
        return revoke_key(repo, target, actor=actor, reason=reason, ledger=ledger, emitter=client.send_event)
