#!/usr/bin/env python3
"""X-Wing and HKDF written out independently of the Rust code, imported by
gen_relay_v2_vectors.py. (Run as a script it still prints version 1's known answers — v1 is
retired and its relay-v1.json no longer kept.) Originally: known-answer vectors for Veil Relay v1
(docs/relay-protocol.md), computed by an implementation INDEPENDENT of the Rust code.

Independent means: nothing here calls Veil code or the RustCrypto crates.
  - X-Wing (draft-connolly-cfrg-xwing-kem-06) is written out here from the draft, with
    ML-KEM-768 from `kyber-py` (pure Python FIPS 203), X25519 from pyca/cryptography, and
    SHAKE256 / SHA3-256 from the stdlib `hashlib`; it first checks itself against the
    draft's three test vectors (xwing-draft06.json).
  - HMAC-SHA256 and SHA-256 are the stdlib (`hmac`, `hashlib`); HKDF is written out from
    RFC 5869; AES-256-GCM is pyca/cryptography's AESGCM (OpenSSL underneath).
  - The wire strings (control headers, AD, nonces, headers JSON) are built here from the
    protocol page.

Every input and every output is in the JSON (hex, and b64url where the wire carries
b64url), including the exact nonce and AD bytes of every part, so another client (the
browser module) can reproduce the file without reading this script.

Not run by CI. To regenerate (the output must be byte-identical unless the protocol changed,
which needs a new protocol version):

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install cryptography==50.0.2 kyber-py==1.2.0
    /tmp/venv/bin/python core/tests/vectors/gen_relay_vectors.py > core/tests/vectors/relay-v1.json
"""
import base64
import hashlib
import hmac
import json
import os
import sys
from importlib.metadata import version

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from kyber_py.ml_kem import ML_KEM_768

LABEL = b"veil-relay/v1"
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


# --- the protocol ---------------------------------------------------------------------------

def issue_client_id(secret: bytes, uuid_bytes: bytes):
    b = bytearray(uuid_bytes)
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    uuid = f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
    mac = hmac_sha256(secret, uuid.encode()).hex()
    return uuid, mac, f"{uuid}.{mac}"


def nonce(part: int, seq: int) -> bytes:
    return part.to_bytes(4, "big") + seq.to_bytes(8, "big")


def ad(pair_id: str, seq: int, method: str, flags: str, part: int, status=None) -> bytes:
    a = b"\x00".join([LABEL, pair_id.encode(), str(seq).encode(), method.encode(), flags.encode()])
    a += b"\x00" + bytes([part])
    if status is not None:
        a += b"\x00" + f"{status:03d}".encode()
    return a


def headers_json(pairs) -> bytes:
    return json.dumps(pairs, separators=(",", ":"), ensure_ascii=False).encode()


def seal_part(key_name, key, part, pair_id, seq, method, flags, plaintext, status=None):
    n = nonce(part, seq)
    a = ad(pair_id, seq, method, flags, part, status)
    sealed = AESGCM(key).encrypt(n, plaintext, a)
    return {
        "part": part,
        "key": key_name,
        "nonce_hex": n.hex(),
        "ad_hex": a.hex(),
        "plaintext_hex": plaintext.hex(),
        "sealed_hex": sealed.hex(),
        "sealed_b64url": b64u(sealed),
    }


def exchange(keys, client_id, pair_id, prefix, name, method, seq, path_and_query, app_headers,
             body, status, resp_headers, resp_body):
    c2s, s2c = keys
    flags = "uhb" if body is not None else "uh"
    control = f"v1,{client_id},{pair_id},{seq},{flags}"
    p1 = seal_part("c2s", c2s, 1, pair_id, seq, method, flags, path_and_query.encode())
    p2 = seal_part("c2s", c2s, 2, pair_id, seq, method, flags, headers_json(app_headers))
    parts = [p1, p2]
    wire_headers = [["x-veil-relay", control], ["x-veil-relay-eh", p2["sealed_b64url"]]]
    wire_body = None
    if body is not None:
        p3 = seal_part("c2s", c2s, 3, pair_id, seq, method, flags, body)
        parts.append(p3)
        wire_headers.append(["content-type", "application/octet-stream"])
        wire_body = bytes.fromhex(p3["sealed_hex"])
    request = {
        "flags": flags,
        "x-veil-relay": control,
        ":path": f"{prefix}/x/{p1['sealed_b64url']}",
        "wire_headers": wire_headers,
        "wire_body_hex": None if wire_body is None else wire_body.hex(),
        "parts": parts,
    }
    rflags = "hb" if resp_body is not None else "h"
    rcontrol = f"v1,{pair_id},{seq},{rflags}"
    p4 = seal_part("s2c", s2c, 4, pair_id, seq, method, rflags, headers_json(resp_headers), status)
    rparts = [p4]
    rwire_body = None
    if resp_body is not None:
        p5 = seal_part("s2c", s2c, 5, pair_id, seq, method, rflags, resp_body, status)
        rparts.append(p5)
        rwire_body = bytes.fromhex(p5["sealed_hex"])
    response = {
        "status": status,
        "flags": rflags,
        "x-veil-relay": rcontrol,
        "x-veil-relay-eh": p4["sealed_b64url"],
        "wire_headers": [["x-veil-relay", rcontrol], ["x-veil-relay-eh", p4["sealed_b64url"]],
                         ["content-type", "application/octet-stream"]],
        "wire_body_hex": None if rwire_body is None else rwire_body.hex(),
        "parts": rparts,
    }
    return {
        "name": name,
        "method": method,
        "seq": seq,
        "path_and_query": path_and_query,
        "headers": app_headers,
        "body_hex": None if body is None else body.hex(),
        "request": request,
        "response_plain": {
            "status": status,
            "sealed_headers": resp_headers,
            "body_hex": None if resp_body is None else resp_body.hex(),
        },
        "response": response,
    }


def main():
    check_against_draft()
    check_hkdf()

    prefix = "/veil"
    secret = sha256(b"veil relay-v1 vectors: client id secret")  # 32 bytes
    uuid_bytes = sha256(b"veil relay-v1 vectors: uuid")[:16]
    uuid, mac, client_id = issue_client_id(secret, uuid_bytes)

    sk = sha256(b"veil relay-v1 vectors: x-wing seed")
    eseed = sha256(b"veil relay-v1 vectors: eseed 1") + sha256(b"veil relay-v1 vectors: eseed 2")
    pk = xwing_keygen(sk)
    ct, ss = xwing_encaps(pk, eseed)
    assert xwing_decaps(sk, ct) == ss

    pair_id_bytes = sha256(b"veil relay-v1 vectors: pair id")[:16]
    pair_id = b64u(pair_id_bytes)
    assert len(pair_id) == 22

    th_input = LABEL + b"/pair" + b"\x00" + client_id.encode() + b"\x00" + pair_id.encode() + b"\x00" + pk + ct
    th = sha256(th_input)
    prk = hkdf_extract(th, ss)
    c2s = hkdf_expand(prk, LABEL + b" c2s", 32)
    s2c = hkdf_expand(prk, LABEL + b" s2c", 32)

    keys = (c2s, s2c)
    resp_json = b'{"ok":true,"items":[1,2,3]}'
    exchanges = [
        exchange(keys, client_id, pair_id, prefix, "GET with a query, no body", "GET", 1,
                 "/app/echo?x=1&y=two%20words",
                 [["accept", "application/json"], ["x-app", "1"], ["x-app", "2"]], None,
                 200, [["content-type", "application/json"], ["content-length", str(len(resp_json))]],
                 resp_json),
        exchange(keys, client_id, pair_id, prefix, "POST with a JSON body", "POST", 2,
                 "/app/items", [["content-type", "application/json"], ["authorization", "Bearer t0k3n"]],
                 b'{"name":"caf\xc3\xa9","qty":2}',
                 201, [["content-type", "application/json"], ["location", "/app/items/7"]],
                 b'{"id":7}'),
        exchange(keys, client_id, pair_id, prefix, "PUT with an empty body, 204 without body", "PUT", 3,
                 "/app/items/7", [], b"",
                 204, [], None),
        exchange(keys, client_id, pair_id, prefix, "PATCH with a binary body, seq far ahead", "PATCH", 300,
                 "/app/blob", [["content-type", "application/octet-stream"]], bytes(range(256)),
                 200, [["content-type", "application/octet-stream"], ["etag", "\"v2\""]], bytes(range(255, -1, -1))),
        exchange(keys, client_id, pair_id, prefix, "DELETE, 404 with an empty body", "DELETE", 299,
                 "/app/items/8", [["x-request-note", "caf\u00e9 \"quoted\" \\ tab\tend"]], None,
                 404, [["content-type", "text/plain"]], b""),
    ]

    out = {
        "description": "Veil Relay v1 known answers (docs/relay-protocol.md). Every input and output "
                       "is given; hex is lowercase, b64url has no padding. ad/nonce are the exact AES-256-GCM "
                       "associated data and nonce of each part; sealed = ciphertext || 16-byte tag.",
        "generator": "core/tests/vectors/gen_relay_vectors.py (independent: Python stdlib hashlib/hmac, "
                     "pyca/cryptography AESGCM and X25519, kyber-py ML-KEM-768)",
        "versions": {
            "python": sys.version.split()[0],
            "cryptography": version("cryptography"),
            "kyber-py": version("kyber-py"),
        },
        "label": LABEL.decode(),
        "prefix": prefix,
        "client_id": {
            "secret_hex": secret.hex(),
            "uuid_random_bytes_hex": uuid_bytes.hex(),
            "uuid": uuid,
            "hmac_hex": mac,
            "client_id": client_id,
        },
        "kem": {
            "name": "X-Wing (draft-connolly-cfrg-xwing-kem-06)",
            "seed_hex": sk.hex(),
            "eseed_hex": eseed.hex(),
            "public_key_hex": pk.hex(),
            "public_key_b64url": b64u(pk),
            "ciphertext_hex": ct.hex(),
            "ciphertext_b64url": b64u(ct),
            "shared_secret_hex": ss.hex(),
        },
        "pairing": {
            "pair_id_random_bytes_hex": pair_id_bytes.hex(),
            "pair_id": pair_id,
            "request_body": json.dumps({"keys": [b64u(pk)]}, separators=(",", ":")),
            "th_input_hex": th_input.hex(),
            "th_hex": th.hex(),
            "prk_hex": prk.hex(),
            "c2s_info": (LABEL + b" c2s").decode(),
            "s2c_info": (LABEL + b" s2c").decode(),
            "c2s_hex": c2s.hex(),
            "s2c_hex": s2c.hex(),
        },
        "exchanges": exchanges,
    }
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
