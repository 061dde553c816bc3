from __future__ import annotations

import pytest

from collector.signers import Signer, find_signers
from tests.certgen import KeyType, make_ca, make_leaf


@pytest.mark.parametrize("key_type", ["rsa", "ec", "ed25519"])
def test_signers_real_signature(key_type: KeyType) -> None:
    ca = make_ca("Device CA", key_type=key_type)
    leaf = make_leaf(ca, "device-1")
    assert find_signers(leaf.cert, [Signer("device-ca", ca.cert)]) == ["device-ca"]


def test_signers_forged_issuer_name() -> None:
    genuine = make_ca("Device CA")
    impostor = make_ca("Device CA")
    forged = make_leaf(impostor, "device-1")
    assert forged.cert.issuer == genuine.cert.subject
    assert find_signers(forged.cert, [Signer("device-ca", genuine.cert)]) == []


def test_signers_other_ca() -> None:
    leaf = make_leaf(make_ca("Device CA"), "device-1")
    assert find_signers(leaf.cert, [Signer("other", make_ca("Other CA").cert)]) == []


def test_signers_intermediate_not_root() -> None:
    root = make_ca("Root CA", key_type="rsa")
    intermediate = make_ca("Issuing CA", parent=root)
    leaf = make_leaf(intermediate, "device-1")
    signers = [Signer("root", root.cert), Signer("intermediate", intermediate.cert)]
    assert find_signers(leaf.cert, signers) == ["intermediate"]
    assert find_signers(intermediate.cert, signers) == ["root"]


def test_signers_keep_order_and_dedupe() -> None:
    ca = make_ca("Device CA")
    leaf = make_leaf(ca, "device-1")
    signers = [Signer("b", ca.cert), Signer("a", ca.cert), Signer("b", ca.cert)]
    assert find_signers(leaf.cert, signers) == ["b", "a"]


def test_signers_none() -> None:
    leaf = make_leaf(make_ca("Device CA"), "device-1")
    assert find_signers(leaf.cert, []) == []
