#!/usr/bin/env python3
"""Writes vectors.json: the test vectors both SDKs (Rust: sdk/tests/vectors.rs, Go:
sdk/go/vectors_test.go) must agree on.

Expected digests and ECDSA DER encodings are computed here with Python's hashlib and the
`cryptography` package, a third implementation that neither SDK uses. The algorithm table
is the contract itself (written out, not computed): which agent algorithm a key spec, a hash
and an RSA padding choose, or `null` where a client must refuse.

Run: python3 sdk/testdata/make_vectors.py > sdk/testdata/vectors.json
"""
import hashlib
import json

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

INPUTS = [b"", b"abc", b"keyward", bytes(range(256)) * 4 + b"\x00\xff"]

digests = [
    {
        "input_hex": data.hex(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "sha384": hashlib.sha384(data).hexdigest(),
        "sha512": hashlib.sha512(data).hexdigest(),
    }
    for data in INPUTS
]

EC = {"ec-p256": "256", "ec-p384": "384", "ec-p521": "512"}
RSA = ["rsa-2048", "rsa-3072", "rsa-4096"]
HASHES = ["none", "sha1", "sha224", "sha256", "sha384", "sha512"]
algorithms = []
for spec in list(EC) + RSA + ["ed25519"]:
    for hash_name in HASHES:
        for padding in ["pkcs1", "pss"]:
            bits = hash_name[3:] if hash_name in ("sha256", "sha384", "sha512") else None
            if spec in EC:
                # ECDSA signs a digest of any of the three hashes with any curve; the padding
                # setting does not apply.
                algorithm = f"ecdsa-sha{bits}" if bits else None
            elif spec in RSA:
                algorithm = f"rsa-{padding}-sha{bits}" if bits else None
            else:
                # Pure Ed25519 signs the message: no prehash at all.
                algorithm = "ed25519" if hash_name == "none" else None
            algorithms.append(
                {"key_spec": spec, "hash": hash_name, "padding": padding, "algorithm": algorithm}
            )

FIELD = {"ec-p256": 32, "ec-p384": 48, "ec-p521": 66}
ecdsa = []
for spec, size in FIELD.items():
    # Every value is a valid scalar (below the group order), so strict decoders accept it.
    top = (1 << (8 * size - 1)) if spec != "ec-p521" else (1 << 520)
    first = 0x7F if spec != "ec-p521" else 0x01
    pairs = [
        (0x1234, 0x5678),                        # both tiny: long runs of leading zeros
        (top | 0xABCDEF, 0x01),                  # r with its high bit set: DER adds 0x00
        (int.from_bytes(bytes([first] + [0x5A] * (size - 1)), "big"),
         int.from_bytes(bytes([first | 0x80 if size < 66 else 0x01] + [0xA5] * (size - 1)), "big")),
        (int.from_bytes(bytes([0x00, 0x80] + [0x11] * (size - 2)), "big"), 0x00FF),
    ]
    for r, s in pairs:
        raw = r.to_bytes(size, "big") + s.to_bytes(size, "big")
        ecdsa.append(
            {"key_spec": spec, "raw_hex": raw.hex(), "der_hex": encode_dss_signature(r, s).hex()}
        )

print(json.dumps({"digests": digests, "algorithms": algorithms, "ecdsa": ecdsa}, indent=1))
