"""Token authentication of the registry block against the real Debian docker-registry configured for it.

The registry (``auth: token``) trusts a token service run here (tests/support/token_issuer.py): it
checks Basic credentials or a refresh token and signs JWTs granting the requested scope. One registry
and one token service serve the module.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
import traceback
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from support.token_issuer import TokenIssuer

import blocks.image_registry as image_registry
from blocks.image_registry import OciImageRegistry, build_image
from blocks.publishing import main as publish_main
from blocks.registry_auth import RegistryAuth, normalize_scope, parse_bearer_challenge
from cli.local_registry import start_registry
from delivery.errors import AuthenticationError, PermanentError, TransientError

SAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "sample-app"
USER = "delivery-bot"
PASSWORD = "pw-Zq8#token-secret"
REFRESH_TOKEN = "refresh-Kx7-acr-secret"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    with TokenIssuer(tmp_path_factory.mktemp("issuer"), users={USER: PASSWORD},
                     refresh_tokens=(REFRESH_TOKEN,)) as running:
        yield running


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory, issuer):
    with start_registry(tmp_path_factory.mktemp("token-registry"), token_auth=issuer.token_auth) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_tokens(monkeypatch, request):
    """Each test starts with no cached token and a token service issuing valid 5-minute tokens."""
    monkeypatch.setattr(image_registry, "_AUTHS", {})
    if "issuer" in request.fixturenames:
        issuer = request.getfixturevalue("issuer")
        issuer.lifetime, issuer.stale = 300, False


def block(url: str, password: str = PASSWORD, **extra) -> OciImageRegistry:
    return OciImageRegistry(url=url, username=USER, password=SecretStr(password), **extra)


def small_image(tmp_path: Path, text: str = "print('token')\n"):
    folder = tmp_path / "ctx"
    folder.mkdir(exist_ok=True)
    (folder / "main.py").write_text(text)
    return build_image(folder, command=["python", "main.py"])


def sample_app_image():
    return build_image(SAMPLE_APP / "src", command=["python", "-m", "sample_app"], port=8080,
                       env={"PYTHONPATH": "/app"})


def test_the_registry_asks_for_a_token_from_the_issuer_and_checks_its_signature(token_registry, issuer, tmp_path):
    manifest = f"{token_registry.url}/v2/demo/x/manifests/t"
    answer = httpx.get(manifest)
    assert answer.status_code == 401
    assert parse_bearer_challenge(answer.headers["WWW-Authenticate"]) == (
        issuer.realm, issuer.token_auth.service, "repository:demo/x:pull")
    granted = issuer.issue(["repository:demo/x:pull"], subject=USER)
    assert httpx.get(manifest, headers={"Authorization": f"Bearer {granted}"}).status_code == 404  # let in
    other = TokenIssuer(tmp_path, users={})  # the same claims signed by a key the registry does not trust
    forged = other.issue(["repository:demo/x:pull"], subject=USER)
    other.close()
    assert httpx.get(manifest, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    wrong_scope = issuer.issue(["repository:demo/other:pull"], subject=USER)
    assert httpx.get(manifest, headers={"Authorization": f"Bearer {wrong_scope}"}).status_code == 401


def test_an_image_is_pushed_and_pulled_through_token_auth_with_tokens_cached(tmp_path, token_registry, issuer):
    image = sample_app_image()
    registry = block(token_registry.url)
    published = registry.push_image(image, repository="demo/sample-app", tag="v1")
    assert published.reference == f"{token_registry.host}/demo/sample-app@{image.digest}"
    # one token to pull (the first HEAD) and one to push (the upload), each asked for once
    assert issuer.requests == [("/token", "repository:demo/sample-app:pull", 200),
                               ("/token", "repository:demo/sample-app:pull,push", 200)]

    # cached: pushing again, reading, resolving, from this block or another instance with the same credentials
    assert registry.push_image(image, repository="demo/sample-app", tag="v1") == published
    assert registry.has(published) and registry.resolve("demo/sample-app", "v1") == image.digest
    assert block(token_registry.url).manifest("demo/sample-app", image.digest)["config"]["size"] > 0
    assert issuer.hits() == 2

    # without a token the registry refuses; a standard client pulls the image with the same credentials
    assert httpx.head(f"{token_registry.url}/v2/demo/sample-app/manifests/v1").status_code == 401
    copy = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"--src-creds={USER}:{PASSWORD}",
                           f"docker://{published.reference}", f"oci:{tmp_path / 'pulled'}:sample"],
                          capture_output=True, text=True, timeout=60)
    assert copy.returncode == 0, copy.stderr
    assert json.loads((tmp_path / "pulled" / "index.json").read_text())["manifests"][0]["digest"] == image.digest
    layer = json.loads(image.manifest)["layers"][0]["digest"].removeprefix("sha256:")
    assert (tmp_path / "pulled" / "blobs" / "sha256" / layer).read_bytes() == image.layer


def test_the_publish_step_pushes_the_sample_app_through_token_auth(token_registry, issuer, monkeypatch, capsys):
    monkeypatch.setenv("IMAGE_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("IMAGE_REGISTRY_PASSWORD", PASSWORD)
    monkeypatch.delenv("IMAGE_REGISTRY_REFRESH_TOKEN", raising=False)
    assert publish_main(["image", "--registry", token_registry.url, "--tag", "build-1",
                         "--settings", str(SAMPLE_APP / "delivery-build.yaml")]) == 0
    marker = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("##delivery[published]"))
    published = json.loads(marker.removeprefix("##delivery[published]"))
    assert block(token_registry.url).resolve("sample-app", "build-1") == published["digest"]
    assert issuer.hits(status=200) >= 2

    monkeypatch.setenv("IMAGE_REGISTRY_PASSWORD", "not-" + PASSWORD)
    assert publish_main(["image", "--registry", token_registry.url, "--tag", "build-2",
                         "--settings", str(SAMPLE_APP / "delivery-build.yaml")]) == 1
    err = capsys.readouterr().err
    assert "##[error] AuthenticationError:" in err and "refused the credentials of 'delivery-bot'" in err
    assert PASSWORD not in err


def test_an_expired_token_is_renewed_and_one_the_registry_refuses_is_replaced(tmp_path, token_registry, issuer):
    image = small_image(tmp_path)
    registry = block(token_registry.url)
    registry.push_image(image, repository="demo/expiring", tag="t")
    image_registry._AUTHS.clear()  # forget the 5-minute tokens of the push
    issuer.lifetime = 1  # announced and in the JWT: renewed once past, less a tenth
    before = issuer.hits()
    assert registry.resolve("demo/expiring", "t") == image.digest and issuer.hits() == before + 1
    assert registry.resolve("demo/expiring", "t") == image.digest and issuer.hits() == before + 1  # cached
    time.sleep(1.05)
    assert registry.resolve("demo/expiring", "t") == image.digest and issuer.hits() == before + 2  # renewed

    # a token the client takes for valid (announced for 300 s) but the registry refuses (its JWT has expired)
    image_registry._AUTHS.clear()
    issuer.lifetime, issuer.stale = 300, True
    with pytest.raises(AuthenticationError, match="registry refused the credentials"):  # at once: no loop
        registry.resolve("demo/expiring", "t")
    assert issuer.hits() == before + 3
    issuer.stale = False
    assert registry.resolve("demo/expiring", "t") == image.digest  # the refused token dropped, a new one asked for
    assert issuer.hits() == before + 4
    assert registry.resolve("demo/expiring", "t") == image.digest and issuer.hits() == before + 4


def test_a_wrong_password_is_a_permanent_error_that_shows_no_secret(tmp_path, token_registry, issuer, caplog):
    from blocks.publishing import push_with_retries, registry_client

    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + PASSWORD
    image = small_image(tmp_path)
    with pytest.raises(AuthenticationError) as refused:
        block(token_registry.url, password=wrong).push_image(image, repository="demo/denied", tag="t")
    error = refused.value
    assert isinstance(error, PermanentError) and not error.retryable
    assert str(error) == (f"check blob {json.loads(image.manifest)['config']['digest']}: "
                          f"the registry's token service {issuer.realm} (scope 'repository:demo/denied:pull') refused "
                          f"the credentials of 'delivery-bot' (401): check the registry block's credentials")
    assert issuer.requests[-1] == ("/token", "repository:demo/denied:pull", 401)

    calls = issuer.hits(status=401)
    with registry_client(token_registry.url, username=USER, password=wrong) as client, \
            pytest.raises(AuthenticationError):
        push_with_retries(client, image, url=token_registry.url, repository="demo/denied", tag="t",
                          sleep=lambda _s: None)
    assert issuer.hits(status=401) == calls + 1  # never retried

    # a good token is not shown either: push, then look for it everywhere
    good = block(token_registry.url)
    good.push_image(image, repository="demo/allowed", tag="t")
    tokens = [token for _key, (token, _expiry) in good._registry_auth()._tokens.items()]
    assert tokens
    shown = "".join(traceback.format_exception(error)) + caplog.text + repr(good) + repr(good._registry_auth())
    for secret in [PASSWORD, wrong, *tokens]:
        assert secret not in shown


def test_an_acr_refresh_token_is_exchanged_at_the_oauth2_realm(tmp_path, issuer, tmp_path_factory):
    """ACR's flow: ``POST <realm>`` with ``grant_type=refresh_token``; the realm is ACR's ``/oauth2/token``."""
    acr_like = TokenIssuer(tmp_path_factory.mktemp("acr-issuer"), users={}, refresh_tokens=(REFRESH_TOKEN,),
                           key_header="kid")
    with acr_like, start_registry(tmp_path / "acr", token_auth=acr_like.token_auth_at("/oauth2/token")) as acr:
        image = small_image(tmp_path)
        registry = OciImageRegistry(url=acr.url, refresh_token=SecretStr(REFRESH_TOKEN))
        assert registry.push_image(image, repository="demo/acr", tag="t").digest == image.digest
        assert registry.resolve("demo/acr", "t") == image.digest
        assert acr_like.hits("/oauth2/token", status=200) == 2 and acr_like.hits("/token") == 0

        with pytest.raises(AuthenticationError, match="refused the refresh token") as refused:
            OciImageRegistry(url=acr.url, refresh_token=SecretStr("revoked")).resolve("demo/acr", "t")
        assert "revoked" not in str(refused.value) and REFRESH_TOKEN not in str(refused.value)


# ------------------------------------------------------------------ the flow's edges, on a mock transport


def _challenging(realm_answer: httpx.Response, seen: list[tuple[str, httpx.URL, str]]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url, request.headers.get("Authorization", "")))
        if request.url.host == "auth.invalid":
            return realm_answer
        if request.headers.get("Authorization", "").startswith("Bearer "):
            return httpx.Response(200, headers={"Docker-Content-Digest": "sha256:" + "1" * 64})
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.invalid/token",'
                                            'service="reg",scope="repository:a:pull repository:b:pull"'})
    return httpx.MockTransport(handle)


def test_the_realm_is_asked_as_the_token_spec_says_and_its_failures_are_translated():
    seen: list[tuple[str, httpx.URL, str]] = []
    transport = _challenging(httpx.Response(200, json={"access_token": "tok-1"}), seen)
    registry = OciImageRegistry(url="https://reg.invalid", username="u", password=SecretStr("p"))
    assert registry.resolve("a", "t", transport=transport) == "sha256:" + "1" * 64
    (_, _, first), (method, realm, basic), (_, _, again) = seen
    assert first.startswith("Basic ") and basic == first  # basic first, as before; the same to the realm
    assert method == "GET" and realm.params.get_list("scope") == ["repository:a:pull", "repository:b:pull"]
    assert realm.params["service"] == "reg" and realm.params["account"] == "u"
    assert again == "Bearer tok-1"

    for answer, error, text in [
        (httpx.Response(503), TransientError, "answered 503"),
        (httpx.Response(200, json={"nothing": 1}), PermanentError, "without a token"),
        (httpx.Response(403), AuthenticationError, "refused the credentials of 'u' (403)"),
    ]:
        image_registry._AUTHS.clear()
        with pytest.raises(error, match=re.escape(text)):
            registry.resolve("a", "t", transport=_challenging(answer, []))

    def plain_http_realm(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "reg.invalid"
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://auth.invalid/token"'})

    with pytest.raises(PermanentError, match="over plain http"):
        registry.resolve("a", "t", transport=httpx.MockTransport(plain_http_realm))


def test_scopes_are_cached_in_one_spelling():
    # docker-registry lists a scope's actions in random order (a Go map): both are one cache entry
    assert normalize_scope("repository:a/b:push,pull") == normalize_scope("repository:a/b:pull,push") == (
        "repository:a/b:pull,push")
    assert normalize_scope("repository:b:pull  repository:a:pull") == "repository:a:pull repository:b:pull"
    assert normalize_scope("registry:catalog:*") == "registry:catalog:*" and normalize_scope("") == ""
    challenge = 'Bearer realm="r",scope="repository:x:push,pull"'
    assert parse_bearer_challenge(challenge) == ("r", "", "repository:x:pull,push")
    assert parse_bearer_challenge('Basic realm="r"') is None


def test_a_token_without_expires_in_lives_the_spec_default():
    now = [0.0]
    auth = RegistryAuth("u", "p", clock=lambda: now[0])
    seen: list[tuple[str, httpx.URL, str]] = []
    with httpx.Client(auth=auth, transport=_challenging(httpx.Response(200, json={"token": "t"}), seen)) as client:
        client.head("https://reg.invalid/v2/a/manifests/t")
        now[0] = 53.0
        client.head("https://reg.invalid/v2/a/manifests/t")
        assert sum(url.host == "auth.invalid" for _, url, _ in seen) == 1
        now[0] = 55.0  # 60 s, renewed 6 s early
        client.head("https://reg.invalid/v2/a/manifests/t")
        assert sum(url.host == "auth.invalid" for _, url, _ in seen) == 2
