"""Facts document: the collector's output and the policies' input.

Every model is frozen and rejects unknown fields, so a facts file that was
edited by hand or produced by another version fails validation instead of
being evaluated with fields silently dropped. Datetimes are UTC and serialize
as RFC 3339 with a trailing ``Z``.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

SCHEMA_VERSION: Final = 1


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("datetime must carry a timezone, for example 2026-12-04T19:00:00Z")
    return value.astimezone(UTC)


def format_utc(value: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with a ``Z`` suffix and a four-digit year."""
    utc = value.astimezone(UTC)
    # strftime("%Y") does not pad years before 1000, which would not be RFC 3339.
    return f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"


UtcDatetime = Annotated[
    datetime,
    AfterValidator(_require_utc),
    PlainSerializer(format_utc, return_type=str),
]


def _exact_integer(value: object, name: str) -> object:
    """Reject a version that is not a JSON integer: JSON true equals 1 in Python, so a Literal[1] alone accepts it."""
    if type(value) is not int:
        raise ValueError(f"{name} must be the integer 1")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OperatingSystem(_Model):
    family: Literal["linux", "mac", "windows", "ios", "android", "chromeos", "unknown"]
    name: str
    version: str


class Device(_Model):
    hostname: str | None
    serial_number: str | None
    os: OperatingSystem


class CollectorInfo(_Model):
    version: str


class CertificateSource(_Model):
    """Where a certificate was found.

    ``type`` is the source module: ``pem``, ``nssdb``, ``keychain`` or
    ``windows``. ``location`` is the file path, database directory or store
    name. ``label`` is the nickname or friendly name where the source has one.
    """

    type: Literal["pem", "nssdb", "keychain", "windows"]
    location: str
    label: str | None = None


class Name(_Model):
    dn: str
    common_names: list[str] = Field(default_factory=list)


class IssuerName(_Model):
    dn: str


class SubjectAlternativeNames(_Model):
    """SAN values a rule can match; otherName entries (UPN and others) are only counted."""

    dns: list[str] = Field(default_factory=list)
    email: list[str] = Field(default_factory=list)
    uri: list[str] = Field(default_factory=list)
    ip: list[str] = Field(default_factory=list)
    other_name_count: int = Field(default=0, ge=0, le=1_000_000)


class PublicKey(_Model):
    algorithm: Literal["rsa", "ec", "ed25519", "ed448", "dsa", "unknown"]
    size: int | None = Field(default=None, ge=0, le=1_000_000)
    curve: str | None = None


PrivateKeyStatus = Literal["present", "missing", "unverified"]


class PrivateKey(_Model):
    """Evidence that the device has the certificate's private key.

    ``present`` is true only when a key whose public half equals the
    certificate's public key was found: a key file (PEM), or a private-key
    object with the certificate's CKA_ID and the same RSA modulus or EC point
    (NSS). ``unverified`` means a key exists but
    could not be compared, for example because it is encrypted; it never counts
    as presence. ``reason`` says why the status is not ``present``.
    """

    present: bool
    status: PrivateKeyStatus
    location: str | None = None
    reason: str | None = None

    @model_validator(mode="after")
    def _present_agrees_with_status(self) -> PrivateKey:
        if self.present != (self.status == "present"):
            raise ValueError(f"present={self.present} contradicts status {self.status!r}")
        return self


SignatureCheckStatus = Literal["invalid", "unsupported"]


class UnverifiedSigner(_Model):
    """A stored signing certificate whose subject is the certificate's issuer name but whose signature check failed.

    ``status`` is ``invalid`` when the signature does not verify with the
    signing certificate's public key. It is ``unsupported`` when
    ``cryptography`` could not check the signature, because it does not
    support the signature algorithm (dsa-with-sha1 in cryptography 50) or the
    key type, or the algorithm does not fit the key type. ``signature_algorithm``
    is the certificate's signature algorithm by name, or as a dotted OID when
    ``cryptography`` has no name for it. ``reason`` says what failed.
    """

    id: str
    status: SignatureCheckStatus
    signature_algorithm: str
    reason: str


class Certificate(_Model):
    source: CertificateSource
    fingerprint_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    subject: Name
    issuer: IssuerName
    serial_number: str
    not_before: UtcDatetime
    not_after: UtcDatetime
    subject_alternative_names: SubjectAlternativeNames
    extended_key_usage: list[str]
    is_ca: bool
    public_key: PublicKey
    private_key: PrivateKey
    signed_by: list[str]
    unverified_signers: list[UnverifiedSigner] = Field(default_factory=list)

    @model_validator(mode="after")
    def _signers_verified_or_not(self) -> Certificate:
        both = sorted({signer.id for signer in self.unverified_signers} & set(self.signed_by))
        if both:
            raise ValueError(f"signing certificates {both} are in both signed_by and unverified_signers")
        return self


class CollectionError(_Model):
    """A location, file or certificate that could not be read; the rest was still collected.

    ``step`` names the stage that failed: ``open``, ``read``, ``load``,
    ``names``, ``extensions``, ``public_key``, ``key``, ``database``,
    ``command`` (a platform tool failed), ``parse`` (its output could not be
    read) or ``identity``.
    """

    source: str
    location: str
    step: str
    message: str


class CollectionNote(_Model):
    """Something the evaluator should know about a location that is not an error.

    For example, the Windows collector running as SYSTEM reads SYSTEM's own
    ``user`` store, and the PowerShell backend cannot open private keys.
    """

    source: str
    location: str
    message: str


# A challenge nonce: what `certposture challenge` prints (43 characters), or another issuer's
# nonce of 16 to 128 characters from the URL-safe base64 alphabet.
NONCE_PATTERN: Final = r"^[A-Za-z0-9_-]{16,128}$"
_FINGERPRINT_PATTERN = r"^[0-9a-f]{64}$"
# Base64 of a DER certificate or a signature; a certificate larger than 1 MiB is not a device certificate.
_BASE64_PATTERN = r"^[A-Za-z0-9+/]*={0,2}$"
_MAX_CERTIFICATE_BASE64 = 1_400_000
_MAX_SIGNATURE_BASE64 = 2_000

ProofAlgorithm = Literal["rsa-pss-sha256", "ecdsa-sha256", "ed25519"]


class CertificateProof(_Model):
    """Proof that the collector held a certificate's private key when it responded to a challenge.

    ``certificate`` is the certificate's DER in base64. ``signature`` (base64)
    is made with the certificate's private key over the proof message that
    ``collector.proofs.proof_message`` builds from the nonce, the document
    digest and the fingerprint: RSASSA-PSS with SHA-256, MGF1-SHA-256 and a
    32-byte salt, ECDSA with SHA-256 (DER-encoded), or Ed25519.
    """

    fingerprint_sha256: str = Field(pattern=_FINGERPRINT_PATTERN)
    certificate: str = Field(pattern=_BASE64_PATTERN, max_length=_MAX_CERTIFICATE_BASE64)
    algorithm: ProofAlgorithm
    signature: str = Field(pattern=_BASE64_PATTERN, max_length=_MAX_SIGNATURE_BASE64)


class ProofError(_Model):
    """A certificate whose key the collector found but could not sign with, and why."""

    fingerprint_sha256: str = Field(pattern=_FINGERPRINT_PATTERN)
    source: CertificateSource
    # The message is not signed and is quoted in results, so its length is bounded.
    message: str = Field(max_length=16384)


class Proofs(_Model):
    """The response to a challenge: one proof per certificate whose key the collector could use.

    ``document_sha256`` is the SHA-256 of the canonical facts document
    without ``proofs`` (see ``collector.proofs.document_digest``).
    """

    version: Literal[1]
    nonce: str = Field(pattern=NONCE_PATTERN)
    document_sha256: str = Field(pattern=_FINGERPRINT_PATTERN)
    certificates: list[CertificateProof]
    errors: list[ProofError] = Field(default_factory=list)

    @field_validator("version", mode="before")
    @classmethod
    def _integer_version(cls, value: object) -> object:
        return _exact_integer(value, "proofs.version")

    @model_validator(mode="after")
    def _one_proof_per_certificate(self) -> Proofs:
        # A second proof for one fingerprint could hide which one the evaluator checked.
        for field, entries in (("certificates", self.certificates), ("errors", self.errors)):
            counts = Counter(entry.fingerprint_sha256 for entry in entries)
            repeated = sorted(item for item, count in counts.items() if count > 1)
            if repeated:
                listed = ", ".join(repeated[:3]) + (
                    f" and {len(repeated) - 3} more" if len(repeated) > 3 else ""
                )
                raise ValueError(f"proofs.{field} lists fingerprints more than once: {listed}")
        return self


class Facts(_Model):
    schema_version: Literal[1]

    @field_validator("schema_version", mode="before")
    @classmethod
    def _integer_version(cls, value: object) -> object:
        return _exact_integer(value, "schema_version")

    collected_at: UtcDatetime
    collector: CollectorInfo
    device: Device
    certificates: list[Certificate]
    errors: list[CollectionError]
    notes: list[CollectionNote] = Field(default_factory=list)
    proofs: Proofs | None = None

    @model_serializer(mode="wrap")
    def _without_absent_proofs(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, object]:
        # Facts collected without a challenge keep the shape they had before proofs existed.
        data: dict[str, object] = handler(self)
        if self.proofs is None:
            data.pop("proofs", None)
        return data


def dump_facts(facts: Facts) -> bytes:
    """Serialize facts as indented JSON with a trailing newline."""
    return orjson.dumps(facts.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"


def load_facts(raw: bytes | str) -> Facts:
    """Parse and validate a facts document; raises pydantic ``ValidationError`` or ``orjson.JSONDecodeError``."""
    return Facts.model_validate(orjson.loads(raw))
