#!/usr/bin/env python3
"""Generate core/tests/vectors/relay-v2.json: known-answer vectors for Veil Relay v2
(docs/relay-protocol.md), computed by an implementation INDEPENDENT of the Rust code.

Independent means: nothing here calls Veil code or the RustCrypto crates.
  - X-Wing is relay_primitives.py's (written out from draft-connolly-cfrg-xwing-kem-06 over
    kyber-py's ML-KEM-768 and pyca/cryptography's X25519), checked against the draft's
    vectors first.
  - HKDF is written out from RFC 5869 over the stdlib `hmac` (checked against RFC 5869 test
    case 1), SHA-256 is `hashlib`, AES-256-GCM is pyca/cryptography's AESGCM (OpenSSL).
  - The key configuration (RFC 9458 §3), the transcript, the labeled key schedule (RFC 9180
    §4 shape), the ADs, nonces and control headers are built here from the protocol page.

Every input and output is in the JSON, so another client (the browser module) can check
itself against the file without reading this script.

Not run by CI. To regenerate (byte-identical unless the protocol changed):

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install cryptography==50.0.2 kyber-py==1.2.0
    /tmp/venv/bin/python core/tests/vectors/gen_relay_v2_vectors.py > core/tests/vectors/relay-v2.json
"""
import json
import os
import struct
import sys
from importlib.metadata import version

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relay_primitives import (  # noqa: E402  (X-Wing, HKDF, client ids)
    b64u, sha256, hmac_sha256, xwing_keygen, xwing_encaps, xwing_decaps, check_against_draft,
    hkdf_extract, hkdf_expand, check_hkdf, issue_client_id,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

LABEL = b"veil-relay/v2"
KEM_ID, KDF_ID, AEAD_ID = 0x647A, 0x0001, 0x0002
SUITE_ID = struct.pack(">HHH", KEM_ID, KDF_ID, AEAD_ID)


def lp(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def labeled_extract(salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hkdf_extract(salt, LABEL + SUITE_ID + label + ikm)


def labeled_expand(prk: bytes, label: bytes, info: bytes, n: int) -> bytes:
    return hkdf_expand(prk, struct.pack(">H", n) + LABEL + SUITE_ID + label + info, n)


def key_config(key_id: int, pk: bytes) -> bytes:
    # RFC 9458 §3.1 Key Config with one symmetric suite
    return bytes([key_id]) + struct.pack(">H", KEM_ID) + pk + struct.pack(">HHH", 4, KDF_ID, AEAD_ID)


def request_ad(part, pair_id, seq, method, scheme, authority, flags) -> bytes:
    return (LABEL + bytes([part]) + lp(pair_id.encode()) + struct.pack(">Q", seq) + lp(method.encode())
            + lp(scheme.encode()) + lp(authority.encode()) + lp(flags.encode()))


def answer_ad(part, pair_id, seq, flags, status, binding) -> bytes:
    return (LABEL + bytes([part]) + lp(pair_id.encode()) + struct.pack(">Q", seq) + lp(flags.encode())
            + struct.pack(">H", status) + binding)


def request_nonce(part, seq) -> bytes:
    return struct.pack(">IQ", part, seq)


def headers_json(pairs) -> bytes:
    return json.dumps(pairs, separators=(",", ":"), ensure_ascii=False).encode()


def sealed_entry(part, key_name, nonce, ad, plaintext, sealed):
    return {
        "part": part,
        "key": key_name,
        "nonce_hex": nonce.hex(),
        "ad_hex": ad.hex(),
        "plaintext_hex": plaintext.hex(),
        "sealed_hex": sealed.hex(),
        "sealed_b64url": b64u(sealed),
    }


def answer(s2c, rn, pair_id, seq, method, scheme, authority, binding, status, kind, parts_plain):
    rs = labeled_extract(rn, b"response", s2c)
    key = labeled_expand(rs, b"key", b"", 32)
    base = labeled_expand(rs, b"nonce", b"", 12)
    flags = kind
    control = f"v2,{pair_id},{seq},{b64u(rn)},{flags}"
    parts = []
    for part, plain in parts_plain:
        nonce = base[:11] + bytes([base[11] ^ part])
        ad = answer_ad(part, pair_id, seq, flags, status, binding)
        sealed = AESGCM(key).encrypt(nonce, plain, ad)
        parts.append(sealed_entry(part, "answer", nonce, ad, plain, sealed))
    return {
        "status": status,
        "flags": flags,
        "response_nonce_hex": rn.hex(),
        "response_secret_hex": rs.hex(),
        "answer_key_hex": key.hex(),
        "base_nonce_hex": base.hex(),
        "x-veil-relay": control,
        "x-veil-relay-eh": parts[0]["sealed_b64url"],
        "parts": parts,
    }


def exchange(c2s, s2c, client_id, pair_id, prefix, name, method, scheme, authority, seq, path_and_query,
             app_headers, body, status, resp_headers, resp_body, error_code=None, extra_nonce=None):
    flags = "uhb" if body is not None else "uh"
    control = f"v2,{client_id},{pair_id},{seq},{flags}"
    plains = [(1, path_and_query.encode()), (2, headers_json(app_headers))]
    if body is not None:
        plains.append((3, body))
    parts = []
    for part, plain in plains:
        nonce = request_nonce(part, seq)
        ad = request_ad(part, pair_id, seq, method, scheme, authority, flags)
        sealed = AESGCM(c2s).encrypt(nonce, plain, ad)
        parts.append(sealed_entry(part, "c2s", nonce, ad, plain, sealed))
    binding = bytes.fromhex(parts[0]["sealed_hex"])[-16:] + bytes.fromhex(parts[1]["sealed_hex"])[-16:]
    rn = sha256(b"veil relay-v2 vectors: response nonce " + name.encode())
    if error_code is None:
        kind = "hb" if resp_body is not None else "h"
        rplain = [(4, headers_json(resp_headers))] + ([(5, resp_body)] if resp_body is not None else [])
    else:
        kind = "e"
        rplain = [(6, error_code.encode())]
    out = {
        "name": name,
        "method": method,
        "scheme": scheme,
        "authority": authority,
        "seq": seq,
        "path_and_query": path_and_query,
        "headers": app_headers,
        "body_hex": None if body is None else body.hex(),
        "request": {
            "flags": flags,
            "x-veil-relay": control,
            ":path": f"{prefix}/x/{parts[0]['sealed_b64url']}",
            "x-veil-relay-eh": parts[1]["sealed_b64url"],
            "wire_body_hex": None if body is None else parts[2]["sealed_hex"],
            "parts": parts,
        },
        "request_binding_hex": binding.hex(),
        "answer_plain": {
            "status": status,
            "error_code": error_code,
            "sealed_headers": resp_headers,
            "body_hex": None if resp_body is None else resp_body.hex(),
        },
        "answer": answer(s2c, rn, pair_id, seq, method, scheme, authority, binding, status, kind, rplain),
    }
    if extra_nonce is not None:
        # the same request answered again (a replay accepted by another instance): a fresh
        # response nonce, so a different key, nonce and ciphertext
        out["answer_again"] = answer(s2c, extra_nonce, pair_id, seq, method, scheme, authority, binding,
                                     status, kind, rplain)
    return out


def main():
    check_against_draft()
    check_hkdf()

    prefix = "/veil"
    secret = sha256(b"veil relay-v2 vectors: client id secret")
    uuid_bytes = sha256(b"veil relay-v2 vectors: uuid")[:16]
    uuid, mac, client_id = issue_client_id(secret, uuid_bytes)

    # the server's long-term key and its configuration
    key_id = 1
    server_seed = sha256(b"veil relay-v2 vectors: server key seed")
    pk_s = xwing_keygen(server_seed)
    config = key_config(key_id, pk_s)
    ohttp_keys = struct.pack(">H", len(config)) + config

    # the client's entry: encapsulate to the server key, an ephemeral key pair
    eseed_s = sha256(b"veil relay-v2 vectors: client eseed 1") + sha256(b"veil relay-v2 vectors: client eseed 2")
    eph_seed = sha256(b"veil relay-v2 vectors: ephemeral seed")
    pk_e = xwing_keygen(eph_seed)
    ct_s, ss_s = xwing_encaps(pk_s, eseed_s)
    assert xwing_decaps(server_seed, ct_s) == ss_s

    # the server's answer
    pair_id_bytes = sha256(b"veil relay-v2 vectors: pair id")[:16]
    pair_id = b64u(pair_id_bytes)
    expires_at = 1767225600
    eseed_e = sha256(b"veil relay-v2 vectors: server eseed 1") + sha256(b"veil relay-v2 vectors: server eseed 2")
    ct_e, ss_e = xwing_encaps(pk_e, eseed_e)
    assert xwing_decaps(eph_seed, ct_e) == ss_e

    th_input = (LABEL + SUITE_ID + b"pair" + lp(config) + lp(client_id.encode()) + lp(pair_id.encode())
                + lp(ct_s) + lp(pk_e) + lp(ct_e) + struct.pack(">Q", expires_at))
    th = sha256(th_input)
    pair_secret = labeled_extract(th, b"secret", ss_s + ss_e)
    c2s = labeled_expand(pair_secret, b"c2s", b"", 32)
    s2c = labeled_expand(pair_secret, b"s2c", b"", 32)
    confirm = labeled_expand(pair_secret, b"confirm", b"", 32)

    # without the server key (a man in the middle): same ephemeral exchange, wrong ss_s
    mitm_secret = labeled_extract(th, b"secret", bytes(32) + ss_e)
    mitm_confirm = labeled_expand(mitm_secret, b"confirm", b"", 32)
    assert mitm_confirm != confirm

    authority, scheme = "app.example:8443", "https"
    resp_json = b'{"ok":true,"items":[1,2,3]}'
    exchanges = [
        exchange(c2s, s2c, client_id, pair_id, prefix, "GET with a query, no body", "GET", scheme, authority, 1,
                 "/app/echo?x=1&y=two%20words",
                 [["accept", "application/json"], ["x-app", "1"], ["x-app", "2"]], None,
                 200, [["content-type", "application/json"], ["content-length", str(len(resp_json))]], resp_json),
        exchange(c2s, s2c, client_id, pair_id, prefix, "POST with a JSON body, answered twice", "POST", scheme,
                 authority, 2, "/app/items",
                 [["content-type", "application/json"], ["authorization", "Bearer t0k3n"]],
                 b'{"name":"caf\xc3\xa9","qty":2}',
                 201, [["content-type", "application/json"], ["location", "/app/items/7"]], b'{"id":7}',
                 extra_nonce=sha256(b"veil relay-v2 vectors: response nonce, second answer")),
        exchange(c2s, s2c, client_id, pair_id, prefix, "PUT with an empty body, 204 without body", "PUT", "http",
                 "127.0.0.1:10000", 3, "/app/items/7", [], b"", 204, [], None),
        exchange(c2s, s2c, client_id, pair_id, prefix, "PATCH refused as a replay (authenticated error)", "PATCH",
                 scheme, authority, 300, "/app/blob", [["content-type", "application/octet-stream"]],
                 bytes(range(256)), 409, [], None, error_code="relay-replay"),
        exchange(c2s, s2c, client_id, pair_id, prefix, "DELETE, 404 with an empty body", "DELETE", scheme,
                 authority, 299, "/app/items/8", [["x-request-note", "caf\u00e9 \"quoted\" \\ tab\tend"]], None,
                 404, [["content-type", "text/plain"]], b""),
    ]

    out = {
        "description": "Veil Relay v2 known answers (docs/relay-protocol.md). Every input and output is "
                       "given; hex is lowercase, b64url has no padding. sealed = ciphertext || 16-byte tag.",
        "generator": "core/tests/vectors/gen_relay_v2_vectors.py (independent: Python stdlib hashlib/hmac, "
                     "pyca/cryptography AESGCM and X25519, kyber-py ML-KEM-768)",
        "versions": {
            "python": sys.version.split()[0],
            "cryptography": version("cryptography"),
            "kyber-py": version("kyber-py"),
        },
        "label": LABEL.decode(),
        "suite_id_hex": SUITE_ID.hex(),
        "prefix": prefix,
        "client_id": {
            "secret_hex": secret.hex(),
            "uuid_random_bytes_hex": uuid_bytes.hex(),
            "client_id": client_id,
        },
        "server_key": {
            "key_id": key_id,
            "seed_hex": server_seed.hex(),
            "public_key_hex": pk_s.hex(),
            "key_config_hex": config.hex(),
            "key_config_b64url": b64u(config),
            "ohttp_keys_hex": ohttp_keys.hex(),
        },
        "pairing": {
            "client_eseed_hex": eseed_s.hex(),
            "enc_server_hex": ct_s.hex(),
            "ss_server_hex": ss_s.hex(),
            "ephemeral_seed_hex": eph_seed.hex(),
            "ephemeral_pk_hex": pk_e.hex(),
            "request_body": json.dumps({"key_id": key_id, "pairs": [{"enc": b64u(ct_s), "pk": b64u(pk_e)}]},
                                       separators=(",", ":")),
            "pair_id_random_bytes_hex": pair_id_bytes.hex(),
            "pair_id": pair_id,
            "expires_at": expires_at,
            "server_eseed_hex": eseed_e.hex(),
            "enc_ephemeral_hex": ct_e.hex(),
            "ss_ephemeral_hex": ss_e.hex(),
            "th_input_hex": th_input.hex(),
            "th_hex": th.hex(),
            "secret_hex": pair_secret.hex(),
            "c2s_hex": c2s.hex(),
            "s2c_hex": s2c.hex(),
            "confirm_hex": confirm.hex(),
            "answer_body": json.dumps({"pairs": [{"pair_id": pair_id, "enc": b64u(ct_e), "expires_at": expires_at,
                                                  "confirm": b64u(confirm)}]}, separators=(",", ":")),
            "mitm_confirm_hex": mitm_confirm.hex(),
        },
        "exchanges": exchanges,
    }
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
