from __future__ import annotations

import pytest

from tests.certgen import CertKey, make_ca


@pytest.fixture(scope="module")
def ca() -> CertKey:
    return make_ca("Example Device CA")
