from __future__ import annotations

import pytest

from tests.certgen import CertKey, make_ca, make_leaf


@pytest.fixture(scope="module")
def ca() -> CertKey:
    return make_ca("Example Device CA")


@pytest.fixture(scope="module")
def leaf(ca: CertKey) -> CertKey:
    return make_leaf(ca, "pf2abc12_mycompany")


@pytest.fixture(scope="module")
def other_leaf(ca: CertKey) -> CertKey:
    return make_leaf(ca, "second-device")
