"""Certificate sources: each module reads one kind of store and returns a ``SourceResult``."""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.facts import Certificate, CollectionError, CollectionNote


@dataclass
class SourceResult:
    """Certificates a source found, and the locations or certificates it could not read."""

    certificates: list[Certificate] = field(default_factory=list)
    errors: list[CollectionError] = field(default_factory=list)
    notes: list[CollectionNote] = field(default_factory=list)
