"""SSHSIG in pure Python, proven against the real ssh-keygen in both directions."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from delivery import sshsig
from delivery.errors import InvalidInput

SSH_KEYGEN = "/usr/bin/ssh-keygen"
MESSAGE = b"delivery-statement v1\nkind: approval\n"


def _keygen(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([SSH_KEYGEN, *args], input=stdin, cwd=cwd, capture_output=True, check=False, timeout=30)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding an ssh-keygen Ed25519 key (ed), an RSA key (rsa) and a protected Ed25519 key."""
    root = tmp_path_factory.mktemp("keys")
    for name, args in {"ed": ["-t", "ed25519", "-N", ""], "rsa": ["-t", "rsa", "-b", "2048", "-N", ""],
                       "protected": ["-t", "ed25519", "-N", "secret"]}.items():
        done = _keygen("-q", *args, "-C", f"{name}@test", "-f", str(root / name))
        assert done.returncode == 0, done.stderr
    return root


def test_verifies_a_signature_made_by_ssh_keygen(keys: Path, tmp_path: Path) -> None:
    data = tmp_path / "statement"
    data.write_bytes(MESSAGE)
    done = _keygen("-Y", "sign", "-n", "delivery", "-f", str(keys / "ed"), str(data))
    assert done.returncode == 0, done.stderr
    signature = sshsig.decode((tmp_path / "statement.sig").read_text())
    _, blob, comment = sshsig.parse_public_key((keys / "ed.pub").read_text())

    sshsig.verify(MESSAGE, signature, namespace="delivery", public_key=blob)
    assert (signature.namespace, signature.hash_algorithm, signature.key_type) == ("delivery", "sha512", "ssh-ed25519")
    assert comment == "ed@test"
    with pytest.raises(InvalidInput, match="does not match"):
        sshsig.verify(MESSAGE + b"x", signature, namespace="delivery", public_key=blob)


def test_ssh_keygen_verifies_a_signature_made_here(keys: Path, tmp_path: Path) -> None:
    key = sshsig.load_private_key(keys / "ed")
    (tmp_path / "statement.sig").write_text(sshsig.sign(MESSAGE, key=key, namespace="delivery"))
    (tmp_path / "allowed_signers").write_text(f"user:alice {(keys / 'ed.pub').read_text()}")
    args = ["-Y", "verify", "-f", "allowed_signers", "-I", "user:alice", "-s", "statement.sig"]

    good = _keygen(*args, "-n", "delivery", stdin=MESSAGE, cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert b'Good "delivery" signature for user:alice' in good.stdout
    assert _keygen(*args, "-n", "git", stdin=MESSAGE, cwd=tmp_path).returncode != 0
    assert _keygen(*args, "-n", "delivery", stdin=MESSAGE + b"x", cwd=tmp_path).returncode != 0


def test_written_key_is_0600_openssh_and_ssh_keygen_reads_it(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "agent"
    sshsig.write_private_key(key, path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    derived = _keygen("-y", "-f", str(path))
    assert derived.returncode == 0, derived.stderr
    expected = sshsig.format_public_key(sshsig.public_key_blob(key.public_key()))
    assert derived.stdout.decode().split()[:2] == expected.split()
    with pytest.raises(InvalidInput, match="already exists"):
        sshsig.write_private_key(Ed25519PrivateKey.generate(), path)


def test_fingerprint_is_the_one_ssh_keygen_prints(keys: Path) -> None:
    _, blob, _ = sshsig.parse_public_key((keys / "ed.pub").read_text())
    printed = _keygen("-l", "-E", "sha256", "-f", str(keys / "ed.pub")).stdout.decode().split()[1]
    assert sshsig.fingerprint(blob) == printed


def test_public_key_line_round_trip(keys: Path) -> None:
    line = (keys / "ed.pub").read_text().strip()
    key_type, blob, comment = sshsig.parse_public_key(line)
    assert sshsig.format_public_key(blob, comment) == line
    assert key_type == "ssh-ed25519"


@pytest.mark.parametrize(("line", "message"), [
    ("ssh-ed25519", "expected 'ssh-ed25519 AAAA"),
    ("ssh-ed25519 not-base64!", "not valid base64"),
    ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB", "the line says ssh-ed25519 but the key data is ssh-rsa"),
    ("ecdsa-sha2-nistp256 AAAA", "only ssh-ed25519 keys are supported, not ecdsa-sha2-nistp256"),
])
def test_bad_public_key_lines(line: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        sshsig.parse_public_key(line)


def test_rsa_keys_are_refused_everywhere(keys: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="only ssh-ed25519 keys are supported, not ssh-rsa"):
        sshsig.parse_public_key((keys / "rsa.pub").read_text())
    with pytest.raises(InvalidInput, match="only ssh-ed25519 keys are supported"):
        sshsig.load_private_key(keys / "rsa")
    (tmp_path / "data").write_bytes(MESSAGE)
    assert _keygen("-Y", "sign", "-n", "delivery", "-f", str(keys / "rsa"), str(tmp_path / "data")).returncode == 0
    signature = sshsig.decode((tmp_path / "data.sig").read_text())
    assert signature.key_type == "ssh-rsa"
    with pytest.raises(InvalidInput, match="only ssh-ed25519 keys are supported, not ssh-rsa"):
        sshsig.verify(MESSAGE, signature, namespace="delivery")


def test_private_key_problems_are_clear(keys: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read"):
        sshsig.load_private_key(tmp_path / "missing")
    with pytest.raises(InvalidInput, match="passphrase-protected"):
        sshsig.load_private_key(keys / "protected")
    (tmp_path / "junk").write_text("not a key\n")
    with pytest.raises(InvalidInput, match="not an OpenSSH private key"):
        sshsig.load_private_key(tmp_path / "junk")


def test_namespace_and_key_are_checked() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    signature = sshsig.decode(sshsig.sign(MESSAGE, key=key, namespace="git"))
    with pytest.raises(InvalidInput, match="namespace is 'git', expected 'delivery'"):
        sshsig.verify(MESSAGE, signature, namespace="delivery")
    with pytest.raises(InvalidInput, match="made by key SHA256:"):
        sshsig.verify(MESSAGE, signature, namespace="git", public_key=sshsig.public_key_blob(other.public_key()))


@pytest.mark.parametrize(("armored", "message"), [
    ("", "expected a block"),
    ("-----BEGIN SSH SIGNATURE-----\n%%%\n-----END SSH SIGNATURE-----", "not valid base64"),
    ("-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----", "truncated"),
    ("-----BEGIN SSH SIGNATURE-----\nWFhYWFhYAAAAAQ==\n-----END SSH SIGNATURE-----", "bad magic"),
    ("-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAg==\n-----END SSH SIGNATURE-----", "version 2"),
])
def test_malformed_blocks(armored: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        sshsig.decode(armored)
