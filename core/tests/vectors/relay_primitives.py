"""The primitives the relay vector generator (gen_relay_v2_vectors.py) builds on, written
out INDEPENDENTLY of the Rust code: nothing here calls Veil code or the RustCrypto crates.

  - X-Wing (draft-connolly-cfrg-xwing-kem-06) is written out from the draft, with ML-KEM-768
    from `kyber-py` (pure Python FIPS 203), X25519 from pyca/cryptography, and SHAKE256 /
    SHA3-256 from the stdlib `hashlib`; `check_against_draft` checks it against the draft's
    three test vectors (xwing-draft06.json).
  - HMAC-SHA256 and SHA-256 are the stdlib (`hmac`, `hashlib`); HKDF is written out from
    RFC 5869 (`check_hkdf`: its test case 1).
  - `issue_client_id`: a client id as the keyservice issues it (UUIDv4 "." HMAC-SHA256 hex).

A module, not a script: it prints nothing.
"""
import base64
import hashlib
import hmac
import json
import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from kyber_py.ml_kem import ML_KEM_768

XWING_LABEL = b"\\.//^\\"  # the 6 bytes \.//^\


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


# --- X-Wing, from the draft ---------------------------------------------------------------

def x25519(k: bytes, u: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(k).exchange(X25519PublicKey.from_public_bytes(u))


def x25519_base(k: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(k).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def xwing_expand(sk: bytes):
    expanded = hashlib.shake_256(sk).digest(96)
    pk_m, sk_m = ML_KEM_768.key_derive(expanded[:64])
    sk_x = expanded[64:96]
    pk_x = x25519_base(sk_x)
    return sk_m, sk_x, pk_m, pk_x


def xwing_combiner(ss_m, ss_x, ct_x, pk_x) -> bytes:
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()


def xwing_keygen(sk: bytes) -> bytes:
    _, _, pk_m, pk_x = xwing_expand(sk)
    return pk_m + pk_x


def xwing_encaps(pk: bytes, eseed: bytes):
    pk_m, pk_x = pk[:1184], pk[1184:1216]
    ek_x = eseed[32:64]
    ct_x = x25519_base(ek_x)
    ss_x = x25519(ek_x, pk_x)
    ss_m, ct_m = ML_KEM_768._encaps_internal(pk_m, eseed[:32])
    return ct_m + ct_x, xwing_combiner(ss_m, ss_x, ct_x, pk_x)


def xwing_decaps(sk: bytes, ct: bytes) -> bytes:
    sk_m, sk_x, _, pk_x = xwing_expand(sk)
    ct_m, ct_x = ct[:1088], ct[1088:1120]
    ss_m = ML_KEM_768.decaps(sk_m, ct_m)
    return xwing_combiner(ss_m, x25519(sk_x, ct_x), ct_x, pk_x)


def check_against_draft():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "xwing-draft06.json")) as f:
        for v in json.load(f):
            sk, eseed = bytes.fromhex(v["seed"]), bytes.fromhex(v["eseed"])
            pk = xwing_keygen(sk)
            assert pk.hex() == v["pk"], "X-Wing keygen differs from the draft"
            ct, ss = xwing_encaps(pk, eseed)
            assert ct.hex() == v["ct"] and ss.hex() == v["ss"], "X-Wing encaps differs"
            assert xwing_decaps(sk, ct) == ss, "X-Wing decaps differs"


# --- HKDF (RFC 5869), checked against test case 1 -------------------------------------------

def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac_sha256(salt, ikm)


def hkdf_expand(prk: bytes, info: bytes, n: int) -> bytes:
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac_sha256(prk, t + info + bytes([i]))
        out += t
        i += 1
    return out[:n]


def check_hkdf():
    prk = hkdf_extract(bytes(range(13)), b"\x0b" * 22)
    okm = hkdf_expand(prk, bytes(range(0xF0, 0xFA)), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        "34007208d5b887185865"
    ), "HKDF differs from RFC 5869 test case 1"



# --- client ids -----------------------------------------------------------------------------

def issue_client_id(secret: bytes, uuid_bytes: bytes):
    b = bytearray(uuid_bytes)
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    uuid = f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
    mac = hmac_sha256(secret, uuid.encode()).hex()
    return uuid, mac, f"{uuid}.{mac}"
