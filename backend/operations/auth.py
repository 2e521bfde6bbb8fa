"""Stations' passwords (OCPP 2.0.1 security profiles 1 and 2: HTTP Basic on the websocket upgrade).

A station's password is stored only as an scrypt hash, ``scrypt$N$r$p$<salt hex>$<hash hex>`` (a random
16-byte salt per password, the cost parameters in the string so that they can be raised later without
breaking the stored ones), and compared in constant time. Hashing costs tens of milliseconds and 16 MiB
on purpose: callers on an event loop run :func:`verify_password` in a thread.

The Basic header itself (RFC 7617) is built and parsed here too: the user is the station id, which may
not contain a colon; the password is everything after the first colon.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from functools import cache

#: scrypt costs: N=2**14, r=8, p=1 (16 MiB, about 40 ms on this machine class).
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
#: OCPP 2.0.1's ``BasicAuthPassword`` is a passwordString of at most 40 characters; 16 is its minimum.
MIN_PASSWORD = 16
MAX_PASSWORD = 40
#: Longer presented passwords are refused without hashing (bounds the work a stranger can cause).
_MAX_PRESENTED = 256
# The most scrypt may use: the costs above need 128·N·r bytes (16 MiB); a stored string asking for more
# is malformed rather than a reason to exhaust memory.
_MAX_MEMORY = 64 * 1024 * 1024


class MalformedCredentialsError(ValueError):
    """An ``Authorization`` header that is not HTTP Basic with ``user:password`` in base64."""


class WeakPasswordError(ValueError):
    """A password shorter than 16 or longer than 40 characters, or with a control character."""


def new_password() -> str:
    """A strong random password (24 random bytes: 32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


def check_password(password: str) -> str:
    """``password`` if OCPP allows it and it is not trivially short; :class:`WeakPasswordError` if not."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise WeakPasswordError(f"a station password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    if any(not ch.isprintable() for ch in password):
        raise WeakPasswordError("a station password has printable characters only")
    return password


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogateescape"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=length,
        maxmem=_MAX_MEMORY + 1024 * 1024,
    )


def hash_password(password: str) -> str:
    """The string to store for ``password`` (a new random salt each time)."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from; ``False`` for a malformed ``stored``.
    Slow (scrypt): do not call it on an event loop."""
    try:
        scheme, n_text, r_text, p_text, salt_hex, hash_hex = stored.split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(hash_hex)
    except ValueError:
        return False
    if (
        scheme != "scrypt"
        or n < 2
        or n & (n - 1)
        or r < 1
        or not 1 <= p <= 16
        or 128 * n * r > _MAX_MEMORY
        or not 16 <= len(expected) <= 64
        or len(password) > _MAX_PRESENTED
    ):
        return False
    try:
        digest = _scrypt(password, salt, n, r, p, len(expected))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(digest, expected)


@cache
def dummy_hash() -> str:
    """A hash of no password anyone has: verifying against it costs what a real verification costs, so
    that a station id that is unknown (or has no password) is not told apart by its refusal's time."""
    return hash_password(secrets.token_urlsafe(24))


def basic_header(user: str, password: str) -> str:
    """The ``Authorization`` header value that presents ``user`` and ``password``."""
    if ":" in user:
        raise MalformedCredentialsError("a Basic user may not contain ':'")
    token = base64.b64encode(f"{user}:{password}".encode("utf-8", "surrogateescape")).decode("ascii")
    return f"Basic {token}"


def parse_basic(header: str) -> tuple[str, str]:
    """``(user, password)`` of an ``Authorization: Basic ...`` header value;
    :class:`MalformedCredentialsError` for anything else."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        raise MalformedCredentialsError("not HTTP Basic credentials")
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise MalformedCredentialsError("Basic credentials that are not base64 of UTF-8 text") from None
    user, colon, password = decoded.partition(":")
    if not colon or not user:
        raise MalformedCredentialsError("Basic credentials without user:password")
    return user, password
