"""Fixtures of the property tests. They are module-scoped, because Hypothesis reruns a test body
many times and a function-scoped fixture would not be reset between those runs."""

from __future__ import annotations

import pytest

from collector.signers import Signer
from tests.certgen import CertKey, make_ca

SIGNER_ID = "device-ca"


@pytest.fixture(scope="module")
def ca() -> CertKey:
    return make_ca("Example Device CA")


@pytest.fixture(scope="module")
def signers(ca: CertKey) -> list[Signer]:
    return [Signer(SIGNER_ID, ca.cert)]
