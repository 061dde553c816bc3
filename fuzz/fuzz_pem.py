"""Fuzz collect_pem with atheris: every input becomes files next to a good certificate and its key.

Run from the repository root: ``python fuzz/fuzz_pem.py -dict=fuzz/pem.dict -atheris_runs=20000``.
Each input is collected three times: as a file of its own, XORed into the DER
of a real certificate, and as that damaged DER in a PEM block. Patching a real
certificate keeps inputs close enough to DER to reach the parsing of names,
extensions and the public key, which random bytes rarely do.

A crash is an exception escaping collect_pem, or an AssertionError when the
good certificate is no longer collected with its key present, or when a
damaged certificate named explicitly yields neither a certificate nor an error.
"""

from __future__ import annotations

import atexit
import base64
import sys
import tempfile
from pathlib import Path

import atheris

# Run as a script, this file has fuzz/ on sys.path, not the repository root that tests/ is in.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports():
    from collector.signers import Signer
    from collector.sources.pem import collect_pem
    from tests.certgen import make_ca, make_leaf

_ca = make_ca("Fuzz Device CA")
_good = make_leaf(_ca, "good-device")
_victim = make_leaf(_ca, "victim-device", sans=["victim.corp.example"], key_type="rsa")
_signers = [Signer("fuzz-ca", _ca.cert)]

# Removed when the process exits, also after a crash (checked with atheris 3.0.0).
_scratch = tempfile.TemporaryDirectory(prefix="fuzz-pem-")
atexit.register(_scratch.cleanup)
_folder = Path(_scratch.name)
_good.write_cert(_folder / "good.pem")
_good.write_key(_folder / "good.key")
_input_path = _folder / "input"


def patched(original: bytes, patch: bytes) -> bytes:
    """XOR ``patch`` into the start of ``original``, and append the part that runs past its end."""
    data = bytearray(original)
    for index, value in enumerate(patch):
        if index < len(data):
            data[index] ^= value
        else:
            data.append(value)
    return bytes(data)


def check(contents: bytes, must_be_reported: bool) -> None:
    """Collect ``contents`` as a file beside the good certificate, by folder scan and by file name."""
    _input_path.write_bytes(contents)
    explicit = [str(_folder / "good.pem"), str(_folder / "good.key"), str(_input_path)]
    for paths in ([str(_folder)], explicit):
        result = collect_pem(paths, _signers)
        good = [cert for cert in result.certificates if cert.fingerprint_sha256 == _good.fingerprint]
        if len(good) != 1 or good[0].private_key.status != "present":
            raise AssertionError(f"the good certificate was lost or lost its key: {result}")
        # A private-key block, even an encrypted one, is valid content that yields no error.
        if must_be_reported and paths == explicit and b"PRIVATE KEY" not in contents:
            reported = [cert.source.location for cert in result.certificates]
            reported += [error.location for error in result.errors]
            if str(_input_path) not in reported:
                raise AssertionError("the damaged certificate yielded no certificate and no error")


def test_one_input(data: bytes) -> None:
    # Raw input may be a private key, which rightly yields neither a certificate nor an error.
    check(data, must_be_reported=False)
    damaged = patched(_victim.cert_der(), data)
    check(damaged, must_be_reported=True)
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(damaged) + b"-----END CERTIFICATE-----\n"
    check(pem, must_be_reported=True)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
