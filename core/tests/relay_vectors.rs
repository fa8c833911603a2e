//! Veil Relay v1 known answers: `vectors/relay-v1.json`, made by the independent generator
//! `vectors/gen_relay_vectors.py` (Python stdlib + pyca/cryptography + kyber-py; it checks
//! its X-Wing against the draft vectors and its HKDF against RFC 5869 first). Every value is
//! recomputed here with `veil_core::relay` and must match byte for byte: client id, X-Wing
//! public key / ciphertext / shared secret, transcript hash, pair keys, and for each
//! exchange the control headers, every part's nonce, AD and sealed bytes, the encoded path.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use veil_core::relay::wire::{self, encode_headers, Part, RequestControl, ResponseControl};
use veil_core::relay::{kem, keys, ClientIdSecret, PartCipher, LABEL};

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/relay-v1.json")).unwrap()
}

fn hx(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn headers(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (s(&p[0]).to_string(), s(&p[1]).to_string()))
        .collect()
}

fn part(n: u64) -> Part {
    match n {
        1 => Part::RequestUrl,
        2 => Part::RequestHeaders,
        3 => Part::RequestBody,
        4 => Part::ResponseHeaders,
        5 => Part::ResponseBody,
        _ => panic!("part {n}"),
    }
}

#[test]
fn client_id() {
    let v = vectors();
    let c = &v["client_id"];
    let secret = ClientIdSecret::new(&hx(&c["secret_hex"])).unwrap();
    let uuid: [u8; 16] = hx(&c["uuid_random_bytes_hex"]).try_into().unwrap();
    let id = secret.issue(uuid);
    assert_eq!(id, s(&c["client_id"]));
    assert_eq!(id, format!("{}.{}", s(&c["uuid"]), s(&c["hmac_hex"])));
    assert!(secret.verify(&id));
}

#[test]
fn kem_and_pair_keys() {
    let v = vectors();
    assert_eq!(s(&v["label"]).as_bytes(), LABEL);
    let k = &v["kem"];
    let seed: [u8; 32] = hx(&k["seed_hex"]).try_into().unwrap();
    let eseed: [u8; 64] = hx(&k["eseed_hex"]).try_into().unwrap();
    let client = kem::ClientKem::from_seed(seed);
    let pk = client.public_key();
    assert_eq!(pk, hx(&k["public_key_hex"]));
    assert_eq!(URL_SAFE_NO_PAD.encode(&pk), s(&k["public_key_b64url"]));
    let (ct, ss) = kem::encapsulate_deterministic(&pk, &eseed).unwrap();
    assert_eq!(ct, hx(&k["ciphertext_hex"]));
    assert_eq!(URL_SAFE_NO_PAD.encode(&ct), s(&k["ciphertext_b64url"]));
    assert_eq!(ss.to_vec(), hx(&k["shared_secret_hex"]));
    assert_eq!(*client.decapsulate(&ct).unwrap(), *ss);

    let p = &v["pairing"];
    let client_id = s(&v["client_id"]["client_id"]);
    let pair_id = s(&p["pair_id"]);
    assert_eq!(
        URL_SAFE_NO_PAD.encode(hx(&p["pair_id_random_bytes_hex"])),
        pair_id
    );
    assert!(wire::is_pair_id(pair_id));
    assert_eq!(
        s(&p["request_body"]),
        serde_json::json!({"keys": [URL_SAFE_NO_PAD.encode(&pk)]}).to_string()
    );
    let th = keys::transcript_hash(client_id, pair_id, &pk, &ct);
    assert_eq!(th.to_vec(), hx(&p["th_hex"]));
    {
        use sha2::Digest;
        assert_eq!(
            sha2::Sha256::digest(hx(&p["th_input_hex"])).to_vec(),
            th.to_vec()
        );
    }
    let pk_keys = keys::derive(&ss, client_id, pair_id, &pk, &ct);
    assert_eq!(pk_keys.c2s.to_vec(), hx(&p["c2s_hex"]));
    assert_eq!(pk_keys.s2c.to_vec(), hx(&p["s2c_hex"]));
    assert_eq!(s(&p["c2s_info"]).as_bytes(), keys::C2S_INFO);
    assert_eq!(s(&p["s2c_info"]).as_bytes(), keys::S2C_INFO);
}

#[test]
fn exchanges() {
    let v = vectors();
    let prefix = s(&v["prefix"]);
    let client_id = s(&v["client_id"]["client_id"]);
    let pair_id = s(&v["pairing"]["pair_id"]);
    let c2s = PartCipher::new(&hx(&v["pairing"]["c2s_hex"]).try_into().unwrap());
    let s2c = PartCipher::new(&hx(&v["pairing"]["s2c_hex"]).try_into().unwrap());
    let exchanges = v["exchanges"].as_array().unwrap();
    assert_eq!(exchanges.len(), 5);
    for x in exchanges {
        let name = s(&x["name"]);
        let method = s(&x["method"]);
        let seq = x["seq"].as_u64().unwrap();
        let body = x["body_hex"].as_str().map(|b| hex::decode(b).unwrap());
        let app_headers = headers(&x["headers"]);

        let req = &x["request"];
        let control = RequestControl {
            client_id,
            pair_id,
            seq,
            body: body.is_some(),
        };
        assert_eq!(control.flags(), s(&req["flags"]), "{name}");
        assert_eq!(control.to_header_value(), s(&req["x-veil-relay"]), "{name}");
        assert_eq!(
            RequestControl::parse(s(&req["x-veil-relay"])).unwrap(),
            control
        );
        let ctx = control.context(method);
        let mut want_plain = vec![
            x["path_and_query"].as_str().unwrap().as_bytes().to_vec(),
            encode_headers(&app_headers),
        ];
        if let Some(b) = &body {
            want_plain.push(b.clone());
        }
        let parts = req["parts"].as_array().unwrap();
        assert_eq!(parts.len(), want_plain.len(), "{name}");
        for (p, plain) in parts.iter().zip(&want_plain) {
            let part = part(p["part"].as_u64().unwrap());
            assert_eq!(s(&p["key"]), "c2s");
            assert_eq!(
                ctx.nonce(part).to_vec(),
                hx(&p["nonce_hex"]),
                "{name} {part:?}"
            );
            assert_eq!(ctx.ad(part).unwrap(), hx(&p["ad_hex"]), "{name} {part:?}");
            assert_eq!(plain, &hx(&p["plaintext_hex"]), "{name} {part:?}");
            let sealed = c2s.seal(part, &ctx, plain).unwrap();
            assert_eq!(sealed, hx(&p["sealed_hex"]), "{name} {part:?}");
            assert_eq!(URL_SAFE_NO_PAD.encode(&sealed), s(&p["sealed_b64url"]));
            assert_eq!(&c2s.open(part, &ctx, &sealed).unwrap(), plain);
        }
        let path_b64 = s(&parts[0]["sealed_b64url"]);
        assert_eq!(
            wire::encoded_path(prefix, path_b64),
            s(&req[":path"]),
            "{name}"
        );
        assert_eq!(
            wire::sealed_path_part(prefix, s(&req[":path"])),
            Some(path_b64)
        );
        let decoded = wire::decode_request_headers(&hx(&parts[1]["plaintext_hex"])).unwrap();
        assert_eq!(decoded, app_headers, "{name}");
        let wire_headers = headers(&req["wire_headers"]);
        assert_eq!(
            wire_headers[0],
            ("x-veil-relay".into(), control.to_header_value())
        );
        assert_eq!(wire_headers[1].1, s(&parts[1]["sealed_b64url"]));
        match &body {
            Some(_) => {
                assert_eq!(
                    wire_headers[2],
                    ("content-type".into(), "application/octet-stream".into())
                );
                assert_eq!(hx(&req["wire_body_hex"]), hx(&parts[2]["sealed_hex"]));
            }
            None => assert!(req["wire_body_hex"].is_null() && wire_headers.len() == 2),
        }

        let plain = &x["response_plain"];
        let status = plain["status"].as_u64().unwrap() as u16;
        let rbody = plain["body_hex"].as_str().map(|b| hex::decode(b).unwrap());
        let sealed_headers = headers(&plain["sealed_headers"]);
        let resp = &x["response"];
        assert_eq!(resp["status"].as_u64().unwrap() as u16, status);
        let rc = ResponseControl {
            pair_id,
            seq,
            body: rbody.is_some(),
        };
        assert_eq!(rc.flags(), s(&resp["flags"]), "{name}");
        assert_eq!(rc.to_header_value(), s(&resp["x-veil-relay"]), "{name}");
        assert_eq!(
            ResponseControl::parse(s(&resp["x-veil-relay"])).unwrap(),
            rc
        );
        let rctx = rc.context(method, status);
        let mut want_plain = vec![encode_headers(&sealed_headers)];
        if let Some(b) = &rbody {
            want_plain.push(b.clone());
        }
        let rparts = resp["parts"].as_array().unwrap();
        assert_eq!(rparts.len(), want_plain.len(), "{name}");
        for (p, plain) in rparts.iter().zip(&want_plain) {
            let part = part(p["part"].as_u64().unwrap());
            assert_eq!(s(&p["key"]), "s2c");
            assert_eq!(
                rctx.nonce(part).to_vec(),
                hx(&p["nonce_hex"]),
                "{name} {part:?}"
            );
            assert_eq!(rctx.ad(part).unwrap(), hx(&p["ad_hex"]), "{name} {part:?}");
            assert_eq!(plain, &hx(&p["plaintext_hex"]), "{name} {part:?}");
            let sealed = s2c.seal(part, &rctx, plain).unwrap();
            assert_eq!(sealed, hx(&p["sealed_hex"]), "{name} {part:?}");
            assert_eq!(&s2c.open(part, &rctx, &sealed).unwrap(), plain);
            // the wrong direction's key does not open it
            assert!(c2s.open(part, &rctx, &sealed).is_err());
        }
        assert_eq!(s(&resp["x-veil-relay-eh"]), s(&rparts[0]["sealed_b64url"]));
        let opened = s2c
            .open_b64(Part::ResponseHeaders, &rctx, s(&resp["x-veil-relay-eh"]))
            .unwrap();
        assert_eq!(
            wire::decode_response_headers(&opened).unwrap(),
            sealed_headers
        );
    }
}
