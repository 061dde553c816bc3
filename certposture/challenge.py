"""Challenges for proof of possession: issue a fresh nonce, and check whether a response to one is still accepted.

``certposture challenge`` stores each nonce it prints with its expiry, and
``evaluate --require-proof NONCE`` accepts proofs only for a nonce that this
store issued and that has not expired. The nonce is 32 random bytes from the
operating system's generator, in URL-safe base64 without padding.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from certposture.errors import InputError
from certposture.posturelog import parse_duration
from certposture.store import Store
from collector.facts import NONCE_PATTERN, format_utc

NONCE_BYTES: Final = 32
DEFAULT_TTL: Final = timedelta(minutes=5)
MAX_TTL: Final = timedelta(days=1)
# Expired challenges are kept this long, so that a late response is reported as expired, not unknown.
KEEP_EXPIRED: Final = timedelta(days=7)

# A duration too large for timedelta is still longer than the maximum, not invalid.
_TOO_LONG = re.compile(r"[0-9]{10,}[smhd]")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Challenge:
    nonce: str
    issued_at: datetime
    expires_at: datetime

    def document(self) -> dict[str, str]:
        return {
            "nonce": self.nonce,
            "issued_at": format_utc(self.issued_at),
            "expires_at": format_utc(self.expires_at),
        }


def parse_ttl(text: str) -> timedelta:
    """Parse ``--ttl``: a whole number and a unit s, m, h or d, from 1s to 1d."""
    try:
        ttl = parse_duration(text, "--ttl", "5m")
    except InputError:
        if not _TOO_LONG.fullmatch(text):
            raise
        ttl = MAX_TTL * 2
    if ttl < timedelta(seconds=1):
        raise InputError(f"--ttl {text[:40]} is shorter than 1s; give a duration from 1s to 1d, such as 5m")
    if ttl > MAX_TTL:
        raise InputError(
            f"--ttl {text[:40]} is longer than 1d; a device should respond to a challenge within minutes, "
            "so give a duration from 1s to 1d, such as 5m"
        )
    return ttl


def issue_challenge(store: Store, ttl: timedelta = DEFAULT_TTL, now: datetime | None = None) -> Challenge:
    """Create a nonce, store it with its expiry and return it."""
    issued_at = now or datetime.now(UTC)
    nonce = base64.urlsafe_b64encode(secrets.token_bytes(NONCE_BYTES)).rstrip(b"=").decode("ascii")
    challenge = Challenge(nonce=nonce, issued_at=issued_at, expires_at=issued_at + ttl)
    store.add_challenge(
        nonce,
        _microseconds(challenge.issued_at),
        _microseconds(challenge.expires_at),
        _microseconds(issued_at - KEEP_EXPIRED),
    )
    return challenge


def check_nonce_format(nonce: str, option: str = "--require-proof") -> None:
    """Raise InputError when ``nonce`` cannot be a challenge nonce."""
    if not re.fullmatch(NONCE_PATTERN, nonce):
        raise InputError(
            f"{option} {nonce!r} is not a nonce; give the nonce that `certposture challenge` printed "
            "(16 to 128 characters from A-Z, a-z, 0-9, - and _)"
        )


def nonce_problem(store: Store, nonce: str, now: datetime | None = None) -> str | None:
    """Return why proofs for ``nonce`` cannot be accepted now, or None when it was issued here and has not expired.

    The real clock decides, not ``--at``: a challenge is about when the
    device responded, and a past evaluation time must not revive it.
    """
    expires_us = store.challenge_expiry(nonce)
    if expires_us is None:
        return (
            f"challenge {nonce} is unknown to this store (never issued here, or expired more than "
            f"{KEEP_EXPIRED.days} days ago), so no proof for it is accepted; "
            "issue one with `certposture challenge` and collect with --challenge NONCE"
        )
    current = now or datetime.now(UTC)
    if _microseconds(current) > expires_us:
        expired_at = format_utc(_EPOCH + timedelta(microseconds=expires_us))
        return (
            f"challenge {nonce} expired at {expired_at}, so no proof for it is accepted; "
            "issue a new one with `certposture challenge` and collect again"
        )
    return None


def _microseconds(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1)
