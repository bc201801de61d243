"""SSH signatures in the format of ``ssh-keygen -Y sign`` (OpenSSH ``PROTOCOL.sshsig``).

Written here (with the ``cryptography`` package for the key maths) so that a reviewer can
verify a cloudtaser approval with stock OpenSSH, and an approval made with ``ssh-keygen -Y
sign`` verifies here. Supported keys: Ed25519 (``ssh-ed25519``), RSA of 2048 to 16384 bits
(signing always ``rsa-sha2-512``; verification also accepts ``rsa-sha2-256``, never SHA-1
``ssh-rsa``), ECDSA on NIST P-256/384/521 (``ecdsa-sha2-nistp*``) and, for verification only,
FIDO Ed25519 keys (``sk-ssh-ed25519@openssh.com``, user presence required). Keys come from OpenSSH
private key files (encrypted ones need a passphrase and the ``bcrypt`` package) or from a
running ssh-agent (``SSH_AUTH_SOCK``, agent protocol ``SSH2_AGENTC_SIGN_REQUEST`` with the
``SSH_AGENT_RSA_SHA2_512`` flag for RSA).

The blob (``PROTOCOL.sshsig``), every ``string`` a uint32 length and bytes::

    byte[6]  "SSHSIG"            uint32 1 (version)      string publickey
    string   namespace           string reserved ("")    string hash_algorithm ("sha512")
    string   signature           (itself: string algorithm, string signature bytes)

and what the key signs: ``"SSHSIG" || string namespace || string reserved || string
hash_algorithm || string H(message)``. Armored as base64 in 70-column lines between
``-----BEGIN SSH SIGNATURE-----`` and ``-----END SSH SIGNATURE-----``.

Every parser here is bounded and raises :class:`cloudtaser.errors.ApprovalError` (or
:class:`~cloudtaser.errors.ConfigError` for a key file) with one clear message; nothing in a
message is taken from a signature or key beyond a fingerprint.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_ssh_private_key,
)

from cloudtaser.errors import ApprovalError, ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = [
    "MAX_SIGNATURE_BYTES",
    "AgentSigner",
    "FileSigner",
    "PublicKey",
    "Signature",
    "Signer",
    "armor",
    "load_signer",
    "parse_signature",
    "read_signature_file",
    "sign",
    "verify",
]

MAGIC: Final = b"SSHSIG"
VERSION: Final = 1
HASHES: Final = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}
BEGIN: Final = "-----BEGIN SSH SIGNATURE-----"
END: Final = "-----END SSH SIGNATURE-----"
#: Decoded signature blob limit (an RSA-16384 signature with its key is about 4 KiB).
MAX_SIGNATURE_BYTES: Final = 12 * 1024
MIN_RSA_BITS: Final = 2048
#: OpenSSL's own limit for RSA public-key operations; a larger "key" is an attack.
MAX_RSA_BITS: Final = 16384
_MAX_KEY_FILE: Final = 1024 * 1024
_MAX_AGENT_MESSAGE: Final = 256 * 1024

ED25519: Final = "ssh-ed25519"
RSA: Final = "ssh-rsa"
#: A FIDO authenticator's Ed25519 key (``ssh-keygen -t ed25519-sk``): verified, never signed.
SK_ED25519: Final = "sk-ssh-ed25519@openssh.com"
#: The authenticator's "user present" flag; a signature without it is refused.
_SK_USER_PRESENT: Final = 0x01
#: ECDSA key type -> (curve name in the blob, hash of the signature).
_ECDSA: Final = {
    "ecdsa-sha2-nistp256": ("nistp256", "sha256"),
    "ecdsa-sha2-nistp384": ("nistp384", "sha384"),
    "ecdsa-sha2-nistp521": ("nistp521", "sha512"),
}
_SIG_ALGORITHMS: Final = {
    ED25519: {ED25519},
    RSA: {"rsa-sha2-512", "rsa-sha2-256"},
    SK_ED25519: {SK_ED25519},
    **{name: {name} for name in _ECDSA},
}


def _ec_curve(key_type: str) -> Any:
    curve = _ECDSA[key_type][0]
    if curve == "nistp256":
        return ec.SECP256R1()
    return ec.SECP384R1() if curve == "nistp384" else ec.SECP521R1()


def _ec_hash(key_type: str) -> Any:
    name = _ECDSA[key_type][1]
    if name == "sha256":
        return hashes.SHA256()
    return hashes.SHA384() if name == "sha384" else hashes.SHA512()


def _mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return _string(raw)


# ssh-agent protocol (draft-miller-ssh-agent)
_AGENT_FAILURE: Final = 5
_AGENTC_REQUEST_IDENTITIES: Final = 11
_AGENT_IDENTITIES_ANSWER: Final = 12
_AGENTC_SIGN_REQUEST: Final = 13
_AGENT_SIGN_RESPONSE: Final = 14
_AGENT_RSA_SHA2_512: Final = 4


# --- the SSH wire format ----------------------------------------------------------------------


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class _Reader:
    """Bounded reads of SSH wire data; every failure is ``ValueError``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise ValueError("truncated")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint32())

    def text(self) -> str:
        try:
            return self.string().decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("not ASCII") from None

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)

    def done(self) -> bool:
        return self.pos == len(self.data)


@dataclass(frozen=True)
class PublicKey:
    """An SSH public key: its type (``ssh-ed25519``, ``ssh-rsa``) and wire blob."""

    type: str
    blob: bytes

    @classmethod
    def from_blob(cls, blob: bytes) -> PublicKey:
        """Parse and check a wire blob (raises ``ValueError`` for anything unsupported)."""
        reader = _Reader(blob)
        key_type = reader.text()
        if key_type in {ED25519, SK_ED25519}:
            if len(reader.string()) != 32:
                raise ValueError("an Ed25519 key has 32 bytes")
            if key_type == SK_ED25519 and not reader.string():
                raise ValueError("a FIDO key names its application")
        elif key_type == RSA:
            exponent, modulus = reader.mpint(), reader.mpint()
            if exponent <= 1 or exponent.bit_length() > 64 or modulus <= 0:
                raise ValueError("not a valid RSA key")
            if not MIN_RSA_BITS <= modulus.bit_length() <= MAX_RSA_BITS:
                raise ValueError(f"RSA keys need {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
        elif key_type in _ECDSA:
            if reader.text() != _ECDSA[key_type][0]:
                raise ValueError("the ECDSA curve does not match the key type")
            ec.EllipticCurvePublicKey.from_encoded_point(_ec_curve(key_type), reader.string())
        else:
            raise ValueError(
                f"key type {key_type[:40]!r} is not supported (use ssh-ed25519, ssh-rsa or "
                "ecdsa-sha2-nistp256/384/521)"
            )
        if not reader.done():
            raise ValueError("trailing bytes after the key")
        return cls(type=key_type, blob=blob)

    @property
    def fingerprint(self) -> str:
        """``SHA256:<base64>`` as ``ssh-keygen -l`` shows it."""
        raw = base64.b64encode(hashlib.sha256(self.blob).digest()).decode("ascii")
        return "SHA256:" + raw.rstrip("=")

    @property
    def openssh(self) -> str:
        """``<type> <base64>`` (an authorized_keys / allowed-signers key field)."""
        return f"{self.type} {base64.b64encode(self.blob).decode('ascii')}"

    def verify(self, algorithm: str, signature: bytes, data: bytes, sk: bytes = b"") -> bool:
        """True when ``signature`` (made with ``algorithm``) over ``data`` is valid. ``sk``:
        a FIDO signature's flags byte and counter (the user-present flag is required)."""

        if algorithm not in _SIG_ALGORITHMS[self.type]:
            return False
        reader = _Reader(self.blob)
        reader.text()
        try:
            if self.type == ED25519:
                ed25519.Ed25519PublicKey.from_public_bytes(reader.string()).verify(signature, data)
            elif self.type == SK_ED25519:
                public, application = reader.string(), reader.string()
                if len(sk) != 5 or not sk[0] & _SK_USER_PRESENT:
                    return False
                signed = hashlib.sha256(application).digest() + sk + hashlib.sha256(data).digest()
                ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, signed)
            elif self.type in _ECDSA:
                reader.text()
                ec_key = ec.EllipticCurvePublicKey.from_encoded_point(
                    _ec_curve(self.type), reader.string()
                )
                parts = _Reader(signature)
                r, s = parts.mpint(), parts.mpint()
                if not parts.done() or r <= 0 or s <= 0:
                    return False
                ec_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_ec_hash(self.type)))
            else:
                exponent, modulus = reader.mpint(), reader.mpint()
                key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
                digest = hashes.SHA512() if algorithm == "rsa-sha2-512" else hashes.SHA256()
                key.verify(signature, data, padding.PKCS1v15(), digest)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Signature:
    """A parsed SSHSIG blob."""

    public_key: PublicKey
    namespace: str
    hash_algorithm: str
    algorithm: str
    signature: bytes
    #: FIDO signatures: the flags byte and the uint32 counter after the signature.
    sk: bytes = b""


def _signed_data(namespace: str, hash_algorithm: str, message: bytes) -> bytes:
    digest = HASHES[hash_algorithm](message).digest()
    return (
        MAGIC
        + _string(namespace.encode())
        + _string(b"")
        + _string(hash_algorithm.encode())
        + _string(digest)
    )


def armor(blob: bytes) -> str:
    """The armored form ``ssh-keygen -Y sign`` writes (70-column base64 lines)."""
    text = base64.b64encode(blob).decode("ascii")
    lines = [text[i : i + 70] for i in range(0, len(text), 70)]
    return "\n".join([BEGIN, *lines, END]) + "\n"


def _bad(what: str) -> ApprovalError:
    return ApprovalError(f"the signature is malformed: {what}", source="signature")


def parse_signature(armored: str) -> Signature:
    """Parse an armored SSHSIG (raises :class:`ApprovalError` for anything malformed)."""
    if len(armored) > 4 * MAX_SIGNATURE_BYTES:
        raise _bad("too long")
    lines = [line.strip() for line in armored.strip().splitlines()]
    if len(lines) < 3 or lines[0] != BEGIN or lines[-1] != END:
        raise _bad(f"expected {BEGIN} ... {END}")
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise _bad("invalid base64 (truncated?)") from None
    if len(blob) > MAX_SIGNATURE_BYTES:
        raise _bad("too long")
    reader = _Reader(blob)
    try:
        if reader.take(6) != MAGIC:
            raise _bad("not an SSHSIG blob")
        version = reader.uint32()
        if version != VERSION:
            raise _bad(f"unsupported SSHSIG version {version}")
        key_blob = reader.string()
        namespace = reader.string().decode("utf-8")
        reader.string()  # reserved
        hash_algorithm = reader.text()
        inner = _Reader(reader.string())
        algorithm = inner.text()
        signature = inner.string()
        sk = inner.take(5) if algorithm == SK_ED25519 else b""
        if not (reader.done() and inner.done()):
            raise _bad("trailing bytes")
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"{exc} (the signature is truncated or corrupt)") from None
    if hash_algorithm not in HASHES:
        raise _bad(f"unsupported hash algorithm {hash_algorithm[:20]!r}")
    try:
        public_key = PublicKey.from_blob(key_blob)
    except ValueError as exc:
        raise _bad(f"signing key: {exc}") from None
    return Signature(public_key, namespace, hash_algorithm, algorithm, signature, sk)


def read_signature_file(path: str | os.PathLike[str]) -> str:
    """The text of an armored signature file (bounded; :class:`ConfigError` when unusable)."""
    data = _read_key_file(Path(path))
    if len(data) > 4 * MAX_SIGNATURE_BYTES:
        raise ConfigError(f"{os.fspath(path)} is too large to be an SSH signature")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"{os.fspath(path)} is not an armored SSH signature") from None


def verify(armored: str, message: bytes, namespace: str) -> PublicKey:
    """Check an armored SSHSIG over ``message`` in ``namespace``; the signing key, or
    :class:`ApprovalError` (malformed, another namespace, or a signature that does not
    verify)."""
    parsed = parse_signature(armored)
    if parsed.namespace != namespace:
        raise ApprovalError(
            f"the signature is for namespace {parsed.namespace[:64]!r}, not {namespace!r} "
            f"(sign with: ssh-keygen -Y sign -n {namespace})",
            source="signature",
        )
    if parsed.sk and not parsed.sk[0] & _SK_USER_PRESENT:
        raise ApprovalError(
            f"the FIDO signature by {parsed.public_key.fingerprint} was made without user "
            "presence (no touch); sign again and touch the key",
            source="signature",
        )
    data = _signed_data(namespace, parsed.hash_algorithm, message)
    if not parsed.public_key.verify(parsed.algorithm, parsed.signature, data, parsed.sk):
        raise ApprovalError(
            f"the signature by {parsed.public_key.fingerprint} does not match the content",
            source="signature",
        )
    return parsed.public_key


# --- signing ----------------------------------------------------------------------------------


class Signer(Protocol):
    """Something that signs with one SSH key."""

    @property
    def public_key(self) -> PublicKey: ...

    def sign_raw(self, data: bytes) -> tuple[str, bytes]:
        """(signature algorithm, the rest of the SSH signature encoding) over ``data``: the
        ``string`` of the signature bytes (and, for a FIDO key, its flags and counter)."""
        ...


def sign(signer: Signer, message: bytes, namespace: str) -> str:
    """An armored SSHSIG over ``message`` (hash sha512), as ``ssh-keygen -Y sign -n``."""
    data = _signed_data(namespace, "sha512", message)
    algorithm, rest = signer.sign_raw(data)
    blob = (
        MAGIC
        + struct.pack(">I", VERSION)
        + _string(signer.public_key.blob)
        + _string(namespace.encode())
        + _string(b"")
        + _string(b"sha512")
        + _string(_string(algorithm.encode()) + rest)
    )
    armored = armor(blob)
    try:  # never record a signature that does not verify (an agent's or a key's fault)
        verify(armored, message, namespace)
    except ApprovalError as exc:
        raise ConfigError(
            f"the key produced a signature that does not verify: {exc.detail}"
        ) from None
    return armored


class FileSigner:
    """A private key from an OpenSSH (or PEM) private key file."""

    def __init__(self, key: Ed25519PrivateKey | RSAPrivateKey | EllipticCurvePrivateKey) -> None:
        self._key = key
        line = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        self._public = PublicKey.from_blob(base64.b64decode(line.split()[1]))

    @property
    def public_key(self) -> PublicKey:
        return self._public

    def sign_raw(self, data: bytes) -> tuple[str, bytes]:
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return ED25519, _string(self._key.sign(data))
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            key_type = self._public.type
            r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(_ec_hash(key_type))))
            return key_type, _string(_mpint(r) + _mpint(s))
        signature = self._key.sign(data, padding.PKCS1v15(), hashes.SHA512())
        return "rsa-sha2-512", _string(signature)


class AgentSigner:
    """A key held by ssh-agent, used through the agent socket (``SSH_AUTH_SOCK``)."""

    def __init__(self, socket_path: str, public_key: PublicKey) -> None:
        self.socket_path = socket_path
        self._public = public_key

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @staticmethod
    def _call(socket_path: str, request: bytes) -> tuple[int, _Reader]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(60)
                sock.connect(socket_path)
                sock.sendall(_string(request))
                head = _recv(sock, 4)
                (length,) = struct.unpack(">I", head)
                if not 1 <= length <= _MAX_AGENT_MESSAGE:
                    raise ConfigError("ssh-agent sent an oversized or empty answer")
                body = _recv(sock, length)
        except OSError as exc:
            raise ConfigError(
                f"cannot talk to ssh-agent at {socket_path}: {exc.strerror or exc}; is "
                "SSH_AUTH_SOCK right and the agent running?"
            ) from None
        return body[0], _Reader(body[1:])

    @classmethod
    def identities(cls, socket_path: str) -> list[PublicKey]:
        """The supported keys the agent holds."""
        kind, reader = cls._call(socket_path, bytes([_AGENTC_REQUEST_IDENTITIES]))
        if kind != _AGENT_IDENTITIES_ANSWER:
            raise ConfigError("ssh-agent refused to list its keys")
        keys = []
        try:
            for _ in range(min(reader.uint32(), 1024)):
                blob = reader.string()
                reader.string()  # comment
                with contextlib.suppress(ValueError):
                    keys.append(PublicKey.from_blob(blob))
        except ValueError:
            raise ConfigError("ssh-agent sent a malformed key list") from None
        return keys

    def sign_raw(self, data: bytes) -> tuple[str, bytes]:
        flags = _AGENT_RSA_SHA2_512 if self._public.type == RSA else 0
        request = (
            bytes([_AGENTC_SIGN_REQUEST])
            + _string(self._public.blob)
            + _string(data)
            + struct.pack(">I", flags)
        )
        kind, reader = self._call(self.socket_path, request)
        if kind == _AGENT_FAILURE:
            raise ConfigError(
                f"ssh-agent refused to sign with {self._public.fingerprint} (a confirmation "
                "declined, a locked agent, or a key the agent does not hold)"
            )
        if kind != _AGENT_SIGN_RESPONSE:
            raise ConfigError(f"ssh-agent answered a sign request with message type {kind}")
        try:
            inner = _Reader(reader.string())
            algorithm = inner.text()
            rest = inner.data[inner.pos :]
        except ValueError:
            raise ConfigError("ssh-agent sent a malformed signature") from None
        expected = "rsa-sha2-512" if self._public.type == RSA else self._public.type
        if algorithm != expected:
            raise ConfigError(
                f"ssh-agent signed with {algorithm[:30]!r} instead of {expected!r} (too old "
                "an agent?)"
            )
        return algorithm, rest


def _recv(sock: socket.socket, count: int) -> bytes:
    chunks = []
    while count:
        chunk = sock.recv(min(count, 65536))
        if not chunk:
            raise ConfigError("ssh-agent closed the connection")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _read_key_file(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the key {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_KEY_FILE:
        raise ConfigError(f"{path} is too large to be an SSH key")
    return data


def _public_from_line(data: bytes, path: Path) -> PublicKey:
    parts = data.split()
    try:
        key = PublicKey.from_blob(base64.b64decode(parts[1], validate=True))
    except (IndexError, binascii.Error, ValueError) as exc:
        raise ConfigError(
            f"{path} is neither a private key nor a usable public key: {exc}"
        ) from None
    if key.type != parts[0].decode("ascii", "replace"):
        raise ConfigError(f"{path}: the key type does not match the key")
    return key


def load_signer(
    path: str | os.PathLike[str],
    *,
    passphrase: Callable[[], bytes | None] | None = None,
    agent_socket: str | None = None,
) -> Signer:
    """A signer for the key at ``path``.

    A private key file signs directly (``passphrase`` is asked for when it is encrypted). A
    public key file (``id_ed25519.pub``) means "this key, in the agent at ``agent_socket``",
    as with ``ssh-keygen -Y sign -f key.pub``. Raises :class:`ConfigError` with what to do.
    """

    key_path = Path(path)
    data = _read_key_file(key_path)
    if not data.lstrip().startswith(b"-----BEGIN "):
        public = _public_from_line(data, key_path)
        if not agent_socket:
            raise ConfigError(
                f"{key_path} is a public key: signing with it needs its private key in "
                "ssh-agent, and SSH_AUTH_SOCK is not set"
            )
        if public not in AgentSigner.identities(agent_socket):
            raise ConfigError(
                f"ssh-agent does not hold the key of {key_path} ({public.fingerprint}); add "
                "it with ssh-add"
            )
        return AgentSigner(agent_socket, public)
    loader = load_ssh_private_key if b"OPENSSH PRIVATE KEY" in data else load_pem_private_key
    password: bytes | None = None
    for _attempt in range(2):
        try:
            key = loader(data, password)
            break
        except TypeError:  # "Key is password-protected." / "not encrypted"
            if password is not None or passphrase is None:
                raise ConfigError(
                    f"{key_path} is encrypted: give its passphrase (prompt, or "
                    "CLOUDTASER_KEY_PASSPHRASE), or load it into ssh-agent and pass the .pub"
                ) from None
            password = passphrase()
            if not password:
                raise ConfigError(f"{key_path} is encrypted and no passphrase was given") from None
        except UnsupportedAlgorithm:
            raise ConfigError(
                f"{key_path} is encrypted and reading it needs the 'bcrypt' package "
                "(pip install 'cloudtaser[encrypted-keys]'), or use ssh-agent with the .pub"
            ) from None
        except ValueError:
            what = "wrong passphrase, or not" if password is not None else "not"
            raise ConfigError(f"{key_path}: {what} a usable private key") from None
    else:  # pragma: no cover - the loop always breaks or raises
        raise ConfigError(f"{key_path}: not a usable private key")
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"{key_path}: RSA keys need at least {MIN_RSA_BITS} bits")
        return FileSigner(key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return FileSigner(key)
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in {
        "secp256r1",
        "secp384r1",
        "secp521r1",
    }:
        return FileSigner(key)
    raise ConfigError(f"{key_path}: only Ed25519, RSA and ECDSA (NIST P-256/384/521) keys can sign")
