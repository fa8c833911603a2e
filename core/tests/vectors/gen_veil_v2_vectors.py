#!/usr/bin/env python3
"""Generate core/tests/vectors/veil-v2-values.json: known-answer vectors for the Veil `v2`
value format, computed by an implementation INDEPENDENT of the Rust code.

Independent means: HKDF is written here from RFC 5869 with the stdlib `hmac` + `hashlib`;
XAES-256-GCM is written here from the C2SP specification (c2sp.org/XAES-256-GCM) on top of
pyca/cryptography's raw AES block (ECB of one block) and AESGCM, and checked against the
specification's two published vectors first; AES-SIV is pyca/cryptography's AESSIV
(RFC 5297); the scope tag is the stdlib's SHA-256; the Padmé padding is written here from
the paper (Nikitin et al., PETS 2019, Algorithm 1); base64 is the stdlib. Nothing here calls
Veil code.

Not run by CI. To regenerate (output must be identical unless the format changed, which needs
a new format version):

    .venv/bin/pip install -r requirements.txt      # cryptography is pinned there
    .venv/bin/python core/tests/vectors/gen_veil_v2_vectors.py > core/tests/vectors/veil-v2-values.json

The format (see core/src/crypto/cipher.rs):
    DEK    = HKDF-SHA256(salt = none, ikm = root, info = "veil/v1/dek/" + "YYYY-MM", L = 32)
    K_siv  = HKDF-Expand-SHA256(PRK = DEK, "veil/v2/siv", 64)
    K_xaes = HKDF-Expand-SHA256(PRK = DEK, "veil/v2/xaes", 32)
    FP     = HKDF-Expand-SHA256(PRK = DEK, "veil/v2/fingerprint", 16)
    body   = value bytes; booleans: 0x01 (true) / 0x00 (false)
    PT     = type byte (s/n/b) || body || 0x80 || 0x00 * k
             pad on:  len(body) + 1 rounded up to 16, 32, 64, 128, 256, then Padmé; pad off: k = 0
    d:  scope  = b64url(SHA-256("veil/v2/scope:" + kind + ":" + name)[:9])   kind: field | domain
        header = "veil:v2:<kid>:d:<scope>"
        sealed = header + ":" + b64url_nopad(AES-SIV(K_siv, [header], PT))        (V || C)
    r:  header = "veil:v2:<kid>:r"
        sealed = header + ":" + b64url_nopad(N(24) || XAES-256-GCM(K_xaes, N, PT, header))
"""
import base64
import hashlib
import hmac
import json
import sys

import cryptography
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac_sha256(salt or b"\x00" * 32, ikm)


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac_sha256(prk, t + info + bytes([i]))
        okm += t
        i += 1
    return okm[:length]


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


# --- XAES-256-GCM, from c2sp.org/XAES-256-GCM -------------------------------------------

def aes_block(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def xaes_derive(key: bytes, n12: bytes) -> bytes:
    # L = AES-256_K(0^128); K1 = L << 1, xor 0x87 into the last byte if MSB(L) was set
    l = int.from_bytes(aes_block(key, b"\x00" * 16), "big")
    k1 = (l << 1) & ((1 << 128) - 1)
    if l >> 127:
        k1 ^= 0x87
    k1 = k1.to_bytes(16, "big")
    m1 = b"\x00\x01X\x00" + n12
    m2 = b"\x00\x02X\x00" + n12
    x = lambda a, b: bytes(p ^ q for p, q in zip(a, b))
    return aes_block(key, x(m1, k1)) + aes_block(key, x(m2, k1))


def xaes_encrypt(key: bytes, nonce: bytes, pt: bytes, ad: bytes) -> bytes:
    assert len(key) == 32 and len(nonce) == 24
    return AESGCM(xaes_derive(key, nonce[:12])).encrypt(nonce[12:], pt, ad)


# --- padding ------------------------------------------------------------------------------

def padme(n: int) -> int:
    # Nikitin et al., PETS 2019, Algorithm 1.
    e = n.bit_length() - 1
    s = e.bit_length()
    last = e - s
    mask = (1 << last) - 1
    return (n + mask) & ~mask


def padded_len(body_len: int, pad: bool) -> int:
    n = body_len + 1
    if not pad:
        return n
    if n <= 16:
        return 16
    if n <= 256:
        b = 16
        while b < n:
            b *= 2
        return b
    return padme(n)


def scope_tag(kind: str, name: str) -> str:
    return b64url(hashlib.sha256(f"veil/v2/scope:{kind}:{name}".encode()).digest()[:9])


def body_of(ty: str, value: bytes) -> bytes:
    if ty == "b":
        return {b"true": b"\x01", b"false": b"\x00"}[value]
    return value


def seal(kid, k_siv, k_xaes, mode, ty, value, pad, scope, nonce):
    body = body_of(ty, value)
    total = padded_len(len(body), pad)
    pt = ty.encode() + body + b"\x80" + b"\x00" * (total - len(body) - 1)
    if mode == "d":
        header = f"veil:v2:{kid}:d:{scope}".encode()
        raw = AESSIV(k_siv).encrypt(pt, [header])
    else:
        header = f"veil:v2:{kid}:r".encode()
        raw = nonce + xaes_encrypt(k_xaes, nonce, pt, header)
    return header.decode() + ":" + b64url(raw)


# (type, value bytes, comment)
INPUTS = [
    ("s", b"", "empty string"),
    ("s", b"alice@example.com", "email, 17 bytes: bucket 32"),
    ("s", b"0123456789abcde", "15 bytes: body + marker = 16, the first bucket exactly"),
    ("s", b"0123456789abcdef", "16 bytes: bucket 32"),
    ("s", "Zoë Ünïcødé 日本語 🦀".encode("utf-8"), "unicode"),
    ("s", b'quote " backslash \\ nul \x00 and trailing zero \x00', "NULs before the marker"),
    ("s", b"x" * 255, "255 bytes: body + marker = 256, the last power-of-two bucket"),
    ("s", b"y" * 256, "256 bytes: Padme from here (257 -> 272)"),
    ("s", ("The quick brown fox jumps over the lazy dog. " * 23).encode(), "1035 bytes: Padme"),
    ("n", b"1.50", "number text kept exactly"),
    ("n", b"12345678901234567890123", "big integer"),
    ("b", b"true", "bool true: one byte"),
    ("b", b"false", "bool false: one byte, same length as true"),
]

KEYS = [
    (1, "2026-01", bytes(range(32)).hex()),
    (7, "2025-07", hashlib.sha256(b"veil test root 7").hexdigest()),
]

SCOPES = [
    ("field", "request.body.email"),
    ("field", "request.headers.authorization"),
    ("domain", "email"),
]


def self_check():
    # RFC 5869 A.1
    prk = hkdf_extract(bytes.fromhex("000102030405060708090a0b0c"), b"\x0b" * 22)
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = hkdf_expand(prk, bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    # C2SP XAES-256-GCM, the specification's two vectors.
    out = xaes_encrypt(b"\x01" * 32, b"ABCDEFGHIJKLMNOPQRSTUVWX", b"XAES-256-GCM", b"")
    assert out.hex() == "ce546ef63c9cc60765923609" + "b33a9a1974e96e52daf2fcf7075e2271"
    out = xaes_encrypt(
        b"\x03" * 32, b"ABCDEFGHIJKLMNOPQRSTUVWX", b"XAES-256-GCM", b"c2sp.org/XAES-256-GCM"
    )
    assert out.hex() == "986ec1832593df5443a17943" + "7fd083bf3fdb41abd740a21f71eb769d"
    # Padmé examples: at most 12 % overhead, exact below the first rounding.
    assert padme(257) == 272 and padme(1036) == 1088 and padme(9) == 10


def main():
    self_check()
    out = {
        "description": "Veil v2 value format known answers; generated by gen_veil_v2_vectors.py "
        "(Python stdlib hmac/hashlib/base64, XAES-256-GCM written from the C2SP spec on "
        "pyca/cryptography AES + AESGCM, pyca/cryptography AESSIV), independent of the Rust "
        "implementation.",
        "generator": {
            "python": sys.version.split()[0],
            "cryptography": cryptography.__version__,
        },
        "scopes": [
            {"kind": k, "name": n, "tag": scope_tag(k, n)} for k, n in SCOPES
        ],
        "padding": [
            {"body_len": n, "pad": p, "padded_len": padded_len(n, p)}
            for n in [0, 1, 14, 15, 16, 31, 32, 100, 127, 255, 256, 300, 1000, 5000, 70000]
            for p in (True, False)
        ],
        "keys": [],
    }
    for version, epoch, root_hex in KEYS:
        root = bytes.fromhex(root_hex)
        kid = f"r{version}.{epoch}"
        dek = hkdf_expand(hkdf_extract(b"", root), f"veil/v1/dek/{epoch}".encode(), 32)
        k_siv = hkdf_expand(dek, b"veil/v2/siv", 64)
        k_xaes = hkdf_expand(dek, b"veil/v2/xaes", 32)
        fp = hkdf_expand(dek, b"veil/v2/fingerprint", 16)
        cases = []
        for i, (ty, value, comment) in enumerate(INPUTS):
            for pad in (True, False):
                for si, (kind, name) in enumerate(SCOPES):
                    tag = scope_tag(kind, name)
                    cases.append(
                        {
                            "comment": comment,
                            "mode": "d",
                            "type": ty,
                            "value_hex": value.hex(),
                            "pad": pad,
                            "scope_kind": kind,
                            "scope_name": name,
                            "sealed": seal(kid, k_siv, k_xaes, "d", ty, value, pad, tag, None),
                        }
                    )
                nonce = hashlib.sha256(f"{kid} v2 nonce {i} {pad}".encode()).digest()[:24]
                cases.append(
                    {
                        "comment": comment,
                        "mode": "r",
                        "type": ty,
                        "value_hex": value.hex(),
                        "pad": pad,
                        "nonce_hex": nonce.hex(),
                        "sealed": seal(kid, k_siv, k_xaes, "r", ty, value, pad, None, nonce),
                    }
                )
        out["keys"].append(
            {
                "root_key_hex": root_hex,
                "root_version": version,
                "epoch": epoch,
                "kid": kid,
                "dek_hex": dek.hex(),
                "fingerprint_hex": fp.hex(),
                "siv_key_hex": k_siv.hex(),
                "xaes_key_hex": k_xaes.hex(),
                "cases": cases,
            }
        )
    json.dump(out, sys.stdout, indent=2, ensure_ascii=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
