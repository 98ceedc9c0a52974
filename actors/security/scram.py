"""SCRAM-SHA-256/512 (RFC 5802, RFC 7677): the challenge–response exchange behind
``connect(username=, password=)`` and, later, Kafka clients' SASL/SCRAM.

Only the message flow lives here; the cryptography is the standard library's
(``hashlib.pbkdf2_hmac``, ``hmac``), composed exactly as the RFC says and checked against the
RFC's own test vector. The broker stores a ``ScramCredential`` (salt, iterations, StoredKey,
ServerKey) — never the password: a stolen credential lets nobody log in without first
brute-forcing the salted, iterated password.

SASLprep is not applied (Kafka's ScramFormatter does not either); channel binding is not
supported (``n,,`` only), as in Kafka.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from ray_broker.errors import AuthenticationFailed, InvalidAcl

MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
DEFAULT_MECHANISM = "SCRAM-SHA-256"
MIN_ITERATIONS = 4096  # Kafka's minimum
DEFAULT_ITERATIONS = 8192
MAX_ITERATIONS = 1_000_000
NONCE_BYTES = 24
MAX_MESSAGE_CHARS = 4096
MAX_PASSWORD_CHARS = 1024


@dataclass(frozen=True)
class ScramCredential:
    """What the broker keeps of one password for one mechanism."""

    mechanism: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "mechanism": self.mechanism,
            "salt": _b64(self.salt),
            "iterations": self.iterations,
            "stored_key": _b64(self.stored_key),
            "server_key": _b64(self.server_key),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ScramCredential:
        return cls(
            doc["mechanism"],
            _unb64(doc["salt"]),
            int(doc["iterations"]),
            _unb64(doc["stored_key"]),
            _unb64(doc["server_key"]),
        )


def make_credential(
    password: str,
    mechanism: str = DEFAULT_MECHANISM,
    iterations: int = DEFAULT_ITERATIONS,
    salt: bytes | None = None,
) -> ScramCredential:
    """Raises InvalidAcl: an unknown mechanism or an iteration count out of range."""
    digest = _digest(mechanism)
    if not isinstance(iterations, int) or not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise InvalidAcl(
            f"iterations must be {MIN_ITERATIONS}..{MAX_ITERATIONS}, not {iterations!r}"
        )
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)
    client_key = _hmac(digest, salted, b"Client Key")
    return ScramCredential(
        mechanism,
        salt,
        iterations,
        hashlib.new(digest, client_key).digest(),
        _hmac(digest, salted, b"Server Key"),
    )


def credentials_for(
    password: str,
    mechanisms: tuple[str, ...] = tuple(MECHANISMS),
    iterations: int = DEFAULT_ITERATIONS,
) -> dict[str, dict[str, Any]]:
    """The stored form of ``password`` for each mechanism — computed by the client, so the
    password itself never leaves the process that knows it.

    Raises:
        InvalidAcl: an empty or oversized password, an unknown mechanism, bad iterations.
    """
    if not isinstance(password, str) or not 0 < len(password) <= MAX_PASSWORD_CHARS:
        raise InvalidAcl(f"a password is a string of 1..{MAX_PASSWORD_CHARS} characters")
    if not mechanisms or any(m not in MECHANISMS for m in mechanisms):
        raise InvalidAcl(f"mechanisms must be among {sorted(MECHANISMS)}, not {mechanisms!r}")
    return {m: make_credential(password, m, iterations).to_json() for m in mechanisms}


def checked_credentials(credentials: object) -> dict[str, dict[str, Any]]:
    """Raises InvalidAcl: not a mechanism → credential mapping the broker can use."""
    if not isinstance(credentials, dict) or not credentials:
        raise InvalidAcl("credentials map a SCRAM mechanism to its stored credential")
    for mechanism, doc in credentials.items():
        try:
            credential = ScramCredential.from_json(doc)
            valid = (
                credential.mechanism == mechanism
                and mechanism in MECHANISMS
                and MIN_ITERATIONS <= credential.iterations <= MAX_ITERATIONS
                and len(credential.stored_key) == len(credential.server_key) >= 32
            )
        except (KeyError, TypeError, ValueError, AuthenticationFailed):
            valid = False
        if not valid:
            raise InvalidAcl(f"malformed {mechanism!r} credential")
    return credentials


class ScramClient:
    """The client side: ``first()``, ``final(server_first)``, ``verify(server_final)``."""

    def __init__(
        self, username: str, password: str, mechanism: str = DEFAULT_MECHANISM, nonce: str = ""
    ) -> None:
        self._digest = _digest(mechanism)
        self.mechanism = mechanism
        self._password = password
        self._nonce = nonce or secrets.token_urlsafe(NONCE_BYTES)
        self._first_bare = f"n={_escape(username)},r={self._nonce}"
        self._server_signature = b""

    def first(self) -> str:
        return "n,," + self._first_bare

    def final(self, server_first: str) -> str:
        """Raises AuthenticationFailed: the server's challenge is malformed or does not extend
        this client's nonce."""
        fields = _fields(server_first)
        nonce, salt, iterations = fields.get("r", ""), fields.get("s", ""), fields.get("i", "")
        if not nonce.startswith(self._nonce) or not salt or not iterations.isdigit():
            raise AuthenticationFailed("the broker's SCRAM challenge is malformed")
        count = int(iterations)
        if not MIN_ITERATIONS <= count <= MAX_ITERATIONS:
            raise AuthenticationFailed(f"the broker asked for {count} iterations")
        salted = hashlib.pbkdf2_hmac(self._digest, self._password.encode(), _unb64(salt), count)
        client_key = _hmac(self._digest, salted, b"Client Key")
        stored_key = hashlib.new(self._digest, client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{server_first},{without_proof}".encode()
        signature = _hmac(self._digest, stored_key, auth_message)
        server_key = _hmac(self._digest, salted, b"Server Key")
        self._server_signature = _hmac(self._digest, server_key, auth_message)
        return f"{without_proof},p={_b64(_xor(client_key, signature))}"

    def verify(self, server_final: str) -> None:
        """Raises AuthenticationFailed: the broker did not prove it knows the credential."""
        fields = _fields(server_final)
        if "e" in fields:
            raise AuthenticationFailed(f"the broker refused the login: {fields['e']}")
        if not hmac.compare_digest(_unb64(fields.get("v", "")), self._server_signature):
            raise AuthenticationFailed("the broker's SCRAM signature is wrong: not this broker")


class ScramServer:
    """The broker's side of one exchange; ``credential`` is None for an unknown user, who gets
    a challenge indistinguishable from a real one and fails only at the proof."""

    def __init__(self, mechanism: str, nonce: str = "") -> None:
        self._digest = _digest(mechanism)
        self.mechanism = mechanism
        self._nonce_tail = nonce or secrets.token_urlsafe(NONCE_BYTES)
        self.username = ""
        self._credential: ScramCredential | None = None
        self._first_bare = ""
        self._server_first = ""
        self.nonce = ""

    @staticmethod
    def username_of(client_first: str) -> str:
        """Raises AuthenticationFailed: a malformed client-first message."""
        _check_message(client_first)
        if not client_first.startswith("n,,"):
            raise AuthenticationFailed("SCRAM: only the 'n,,' GS2 header is supported")
        name = _fields(client_first[3:]).get("n")
        if not name:
            raise AuthenticationFailed("SCRAM: the first message names no user")
        return _unescape(name)

    def first(self, client_first: str, credential: ScramCredential | None, decoy: bytes) -> str:
        """The challenge. ``decoy`` salts the made-up credential of an unknown user, so that
        user's salt is stable across attempts as a real one would be.

        Raises AuthenticationFailed: a malformed message."""
        self.username = self.username_of(client_first)
        self._first_bare = client_first[3:]
        client_nonce = _fields(self._first_bare).get("r", "")
        if not client_nonce:
            raise AuthenticationFailed("SCRAM: the first message carries no nonce")
        if credential is None or credential.mechanism != self.mechanism:
            credential = make_credential(
                secrets.token_urlsafe(16), self.mechanism, DEFAULT_ITERATIONS, decoy[:16]
            )
            self._credential = None
        else:
            self._credential = credential
        self.nonce = client_nonce + self._nonce_tail
        self._server_first = f"r={self.nonce},s={_b64(credential.salt)},i={credential.iterations}"
        return self._server_first

    def final(self, client_final: str) -> str:
        """The server-final message proving the broker knows the credential.

        Raises AuthenticationFailed: the proof is wrong, the user unknown, or the message
        malformed or not of this exchange."""
        _check_message(client_final)
        without_proof, _, proof = client_final.rpartition(",p=")
        fields = _fields(without_proof)
        if fields.get("r") != self.nonce or fields.get("c") != "biws" or not proof:
            raise AuthenticationFailed("SCRAM: the final message does not belong to this exchange")
        credential = self._credential
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        if credential is None:
            raise AuthenticationFailed("wrong user name or password")
        signature = _hmac(self._digest, credential.stored_key, auth_message)
        client_key = _xor(_unb64(proof), signature)
        if len(client_key) != len(signature) or not hmac.compare_digest(
            hashlib.new(self._digest, client_key).digest(), credential.stored_key
        ):
            raise AuthenticationFailed("wrong user name or password")
        return f"v={_b64(_hmac(self._digest, credential.server_key, auth_message))}"


def _digest(mechanism: str) -> str:
    try:
        return MECHANISMS[mechanism]
    except (KeyError, TypeError):
        raise AuthenticationFailed(
            f"unknown SASL mechanism {mechanism!r}; use one of {sorted(MECHANISMS)}"
        ) from None


def _check_message(message: object) -> None:
    if not isinstance(message, str) or not 0 < len(message) <= MAX_MESSAGE_CHARS:
        raise AuthenticationFailed("SCRAM: a message must be a non-empty string of ≤ 4096 chars")


def _fields(message: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in message.split(","):
        name, sep, value = part.partition("=")
        if sep and len(name) == 1:
            fields.setdefault(name, value)
    return fields


def _escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _unescape(name: str) -> str:
    return name.replace("=2C", ",").replace("=3D", "=")


def _hmac(digest: str, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, digest).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=False))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise AuthenticationFailed("SCRAM: a field is not valid base64") from None
