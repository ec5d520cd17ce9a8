"""OpenSSH signatures (PROTOCOL.sshsig) with Ed25519 keys, in pure Python.

What ``ssh-keygen -Y sign`` writes and ``ssh-keygen -Y verify`` reads: an armored blob holding the
magic ``SSHSIG``, version 1, the signer's public key, the namespace, a reserved string, the hash
algorithm and the signature over ``SSHSIG || namespace || reserved || hash_algorithm || H(message)``.
Only ``ssh-ed25519`` keys are supported: every other key type is refused with a clear message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from delivery.errors import InvalidInput

KEY_TYPE = "ssh-ed25519"
MAGIC = b"SSHSIG"
VERSION = 1
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
HASHES = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}  # the two PROTOCOL.sshsig allows
ONLY_ED25519 = "only ssh-ed25519 keys are supported"


@dataclass(frozen=True)
class Signature:
    """A decoded SSHSIG blob."""

    public_key: bytes  # the SSH wire encoding of the signer's public key
    namespace: str
    reserved: bytes
    hash_algorithm: str
    signature: bytes  # the SSH wire encoding: string key type, string raw signature

    @property
    def key_type(self) -> str:
        """The signer's key type, e.g. ``ssh-ed25519``."""
        return _Reader(self.public_key).string().decode("ascii", "replace")


# --------------------------------------------------------------------------- wire format


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class _Reader:
    """Reads SSH wire strings; every malformed input becomes InvalidInput."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def raw(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise InvalidInput("signature: truncated SSH data")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def uint32(self) -> int:
        return struct.unpack(">I", self.raw(4))[0]

    def string(self) -> bytes:
        return self.raw(self.uint32())

    def done(self) -> bool:
        return self.pos == len(self.data)


# --------------------------------------------------------------------------- public keys


def public_key_blob(key: Ed25519PublicKey) -> bytes:
    """Return the SSH wire encoding of an Ed25519 public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _string(KEY_TYPE.encode()) + _string(raw)


def ed25519_key(blob: bytes) -> Ed25519PublicKey:
    """Decode the SSH wire encoding of a public key.

    Raises:
        InvalidInput: the blob is malformed or holds another key type.
    """
    reader = _Reader(blob)
    key_type = reader.string().decode("ascii", "replace")
    if key_type != KEY_TYPE:
        raise InvalidInput(f"public key: {ONLY_ED25519}, not {key_type}")
    raw = reader.string()
    if len(raw) != 32 or not reader.done():
        raise InvalidInput("public key: malformed ssh-ed25519 key (expected 32 bytes)")
    return Ed25519PublicKey.from_public_bytes(raw)


def fingerprint(blob: bytes) -> str:
    """Return the key fingerprint as ``ssh-keygen -l`` prints it: ``SHA256:<base64, no padding>``."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse_public_key(line: str, *, any_type: bool = False) -> tuple[str, bytes, str]:
    """Parse an OpenSSH public key line ``ssh-ed25519 AAAA... [comment]``.

    Args:
        line: the line, as in ``id_ed25519.pub``.
        any_type: accept any key type (revocation lists may name keys we never accept).

    Returns:
        (key type, wire blob, comment).

    Raises:
        InvalidInput: not a public key line, or not ssh-ed25519 (unless ``any_type``).
    """
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise InvalidInput(f"public key: expected 'ssh-ed25519 AAAA... [comment]', got {line.strip()[:60]!r}")
    key_type, encoded = parts[0], parts[1]
    if key_type != KEY_TYPE and not any_type:
        raise InvalidInput(f"public key: {ONLY_ED25519}, not {key_type}")
    try:
        blob = base64.b64decode(encoded, validate=True)
        inner = _Reader(blob).string().decode("ascii")
    except (binascii.Error, UnicodeDecodeError, InvalidInput) as exc:
        raise InvalidInput(f"public key: {encoded[:20]}... is not valid base64 key data") from exc
    if inner != key_type:
        raise InvalidInput(f"public key: the line says {key_type} but the key data is {inner}")
    if key_type == KEY_TYPE:
        ed25519_key(blob)
    return key_type, blob, parts[2].strip() if len(parts) > 2 else ""


def format_public_key(blob: bytes, comment: str = "") -> str:
    """Format a public key line: ``ssh-ed25519 AAAA...`` plus the comment if given."""
    key_type = _Reader(blob).string().decode("ascii")
    line = f"{key_type} {base64.b64encode(blob).decode()}"
    return f"{line} {comment}" if comment else line


# --------------------------------------------------------------------------- private keys


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an unencrypted OpenSSH private key (``ssh-keygen -t ed25519`` or :func:`write_private_key`).

    Raises:
        InvalidInput: the file is missing, not an OpenSSH key, passphrase-protected or not Ed25519.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"key {path}: cannot read ({exc.strerror or exc})") from exc
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except TypeError as exc:  # cryptography's way of saying "needs a password"
        raise InvalidInput(f"key {path}: passphrase-protected keys are not supported for signing here; "
                           "use ssh-keygen -Y sign -n delivery") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"key {path}: not an OpenSSH private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"key {path}: {ONLY_ED25519}")
    return key


def write_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write ``key`` in OpenSSH format, mode 0600; refuse to overwrite an existing file.

    Raises:
        InvalidInput: the file exists or cannot be created.
    """
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())
    try:
        # O_EXCL: never replace someone's key; 0600 from creation, no window where others can read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise InvalidInput(f"key {path}: already exists; refusing to overwrite it") from exc
    except OSError as exc:
        raise InvalidInput(f"key {path}: cannot create ({exc.strerror or exc})") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


# --------------------------------------------------------------------------- signatures


def _signed_data(message: bytes, namespace: str, reserved: bytes, hash_algorithm: str) -> bytes:
    digest = HASHES[hash_algorithm](message).digest()
    return MAGIC + _string(namespace.encode()) + _string(reserved) + _string(hash_algorithm.encode()) + _string(digest)


def encode(sig: Signature) -> str:
    """Armor a signature as ``ssh-keygen`` writes it (base64 wrapped at 70 columns)."""
    blob = (MAGIC + struct.pack(">I", VERSION) + _string(sig.public_key) + _string(sig.namespace.encode())
            + _string(sig.reserved) + _string(sig.hash_algorithm.encode()) + _string(sig.signature))
    text = base64.b64encode(blob).decode()
    lines = [text[i:i + 70] for i in range(0, len(text), 70)]
    return "\n".join([BEGIN, *lines, END]) + "\n"


def decode(armored: str) -> Signature:
    """Decode an armored SSHSIG block.

    Raises:
        InvalidInput: ``signature: ...`` naming what is wrong with the block.
    """
    lines = [line.strip() for line in armored.strip().splitlines() if line.strip()]
    if not lines or lines[0] != BEGIN or lines[-1] != END:
        raise InvalidInput(f"signature: expected a block from {BEGIN} to {END}")
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except binascii.Error as exc:
        raise InvalidInput("signature: the block is not valid base64") from exc
    reader = _Reader(blob)
    if reader.raw(len(MAGIC)) != MAGIC:
        raise InvalidInput("signature: not an SSHSIG signature (bad magic)")
    version = reader.uint32()
    if version != VERSION:
        raise InvalidInput(f"signature: SSHSIG version {version} is not supported (only {VERSION})")
    public_key, namespace, reserved = reader.string(), reader.string(), reader.string()
    hash_algorithm, signature = reader.string(), reader.string()
    if not reader.done():
        raise InvalidInput("signature: trailing data after the signature")
    try:
        return Signature(public_key, namespace.decode(), reserved, hash_algorithm.decode(), signature)
    except UnicodeDecodeError as exc:
        raise InvalidInput("signature: namespace or hash algorithm is not text") from exc


def sign(message: bytes, *, key: Ed25519PrivateKey, namespace: str) -> str:
    """Sign ``message`` as ``ssh-keygen -Y sign -n <namespace>`` does (sha512); return the armored block."""
    signed = _signed_data(message, namespace, b"", "sha512")
    raw = key.sign(signed)
    return encode(Signature(
        public_key=public_key_blob(key.public_key()), namespace=namespace, reserved=b"",
        hash_algorithm="sha512", signature=_string(KEY_TYPE.encode()) + _string(raw),
    ))


def verify(message: bytes, signature: Signature, *, namespace: str, public_key: bytes | None = None) -> None:
    """Check an SSHSIG signature over ``message``.

    Args:
        message: the signed bytes.
        signature: the decoded block.
        namespace: the namespace it must carry.
        public_key: the wire blob the signer must hold; None trusts the key inside the block
            (the caller has checked it against a registry).

    Raises:
        InvalidInput: wrong namespace, key, key type or hash, or the signature does not verify.
    """
    if signature.namespace != namespace:
        raise InvalidInput(f"signature: namespace is {signature.namespace!r}, expected {namespace!r}")
    if public_key is not None and signature.public_key != public_key:
        raise InvalidInput(f"signature: made by key {fingerprint(signature.public_key)}, "
                           f"not {fingerprint(public_key)}")
    key = ed25519_key(signature.public_key)
    if signature.hash_algorithm not in HASHES:
        raise InvalidInput(f"signature: hash algorithm {signature.hash_algorithm!r} is not sha512 or sha256")
    reader = _Reader(signature.signature)
    sig_type, raw = reader.string(), reader.string()
    if sig_type != KEY_TYPE.encode() or not reader.done():
        raise InvalidInput(f"signature: {ONLY_ED25519}")
    try:
        key.verify(raw, _signed_data(message, namespace, signature.reserved, signature.hash_algorithm))
    except InvalidSignature as exc:
        raise InvalidInput("signature: does not match the signed data") from exc
