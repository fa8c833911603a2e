//! Veil Relay v2 known answers: `vectors/relay-v2.json`, made by the independent generator
//! `vectors/gen_relay_v2_vectors.py` (Python stdlib + pyca/cryptography + kyber-py). Every
//! value is recomputed with `veil_core::relay::v2` and must match byte for byte: the key
//! configuration, both encapsulations, the transcript, the key schedule and confirmation,
//! and per exchange the control headers, each part's nonce, AD and sealed bytes, the
//! request binding, and each answer's response key and nonces.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use veil_core::relay::v2::{
    self, AnswerCipher, AnswerKind, ClientOffer, Exchange, KeyConfig, PairAnswer, Part,
    RequestBinding, RequestCipher, RequestControl, ResponseControl, ServerKey, Transcript,
};
use veil_core::relay::wire::{encode_headers, encoded_path};
use veil_core::relay::{ClientIdSecret, RelayError};

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/relay-v2.json")).unwrap()
}

fn hx(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    hx(v).try_into().unwrap()
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
        6 => Part::Error,
        _ => panic!("part {n}"),
    }
}

#[test]
fn key_config() {
    let v = vectors();
    assert_eq!(s(&v["label"]).as_bytes(), v2::LABEL);
    assert_eq!(hx(&v["suite_id_hex"]), v2::SUITE_ID);
    let k = &v["server_key"];
    let server =
        ServerKey::from_seed(k["key_id"].as_u64().unwrap() as u8, arr(&k["seed_hex"])).unwrap();
    assert_eq!(server.config().public_key(), hx(&k["public_key_hex"]));
    assert_eq!(server.config().to_bytes(), hx(&k["key_config_hex"]));
    assert_eq!(server.config().to_b64(), s(&k["key_config_b64url"]));
    assert_eq!(
        &KeyConfig::from_b64(s(&k["key_config_b64url"])).unwrap(),
        server.config()
    );
    assert_eq!(
        KeyConfig::encode_list(std::slice::from_ref(server.config())),
        hx(&k["ohttp_keys_hex"])
    );
    assert_eq!(
        KeyConfig::decode_list(&hx(&k["ohttp_keys_hex"])).unwrap(),
        vec![server.config().clone()]
    );
}

#[test]
fn pairing() {
    let v = vectors();
    let k = &v["server_key"];
    let p = &v["pairing"];
    let c = &v["client_id"];
    let secret = ClientIdSecret::new(&hx(&c["secret_hex"])).unwrap();
    let client_id = secret.issue(arr(&c["uuid_random_bytes_hex"]));
    assert_eq!(client_id, s(&c["client_id"]));

    let server = ServerKey::from_seed(1, arr(&k["seed_hex"])).unwrap();
    let config = KeyConfig::from_b64(s(&k["key_config_b64url"])).unwrap();
    let offer = ClientOffer::deterministic(
        &config,
        &arr(&p["client_eseed_hex"]),
        arr(&p["ephemeral_seed_hex"]),
    )
    .unwrap();
    let wire = offer.wire();
    assert_eq!(wire.enc, hx(&p["enc_server_hex"]));
    assert_eq!(wire.pk, hx(&p["ephemeral_pk_hex"]));
    assert_eq!(
        s(&p["request_body"]),
        serde_json::json!({"key_id": 1, "pairs": [{"enc": URL_SAFE_NO_PAD.encode(&wire.enc), "pk": URL_SAFE_NO_PAD.encode(&wire.pk)}]}).to_string()
    );

    let pair_id = s(&p["pair_id"]);
    assert_eq!(
        URL_SAFE_NO_PAD.encode(hx(&p["pair_id_random_bytes_hex"])),
        pair_id
    );
    let expires_at = p["expires_at"].as_u64().unwrap();
    let acc = server
        .accept_deterministic(
            &client_id,
            pair_id,
            expires_at,
            &wire,
            &arr(&p["server_eseed_hex"]),
        )
        .unwrap();
    assert_eq!(acc.enc, hx(&p["enc_ephemeral_hex"]));
    let t = Transcript {
        key_config: &config.to_bytes(),
        client_id: &client_id,
        pair_id,
        enc_server: &wire.enc,
        ephemeral_pk: &wire.pk,
        enc_ephemeral: &acc.enc,
        expires_at,
    };
    assert_eq!(t.input().unwrap(), hx(&p["th_input_hex"]));
    let th = t.hash().unwrap();
    assert_eq!(th.to_vec(), hx(&p["th_hex"]));
    let sched =
        v2::key_schedule(&arr(&p["ss_server_hex"]), &arr(&p["ss_ephemeral_hex"]), &th).unwrap();
    assert_eq!(
        v2::labeled_extract(
            &th,
            b"secret",
            &[hx(&p["ss_server_hex"]), hx(&p["ss_ephemeral_hex"])].concat()
        )
        .to_vec(),
        hx(&p["secret_hex"])
    );
    for got in [&sched, &acc.secrets] {
        assert_eq!(got.keys.c2s.to_vec(), hx(&p["c2s_hex"]));
        assert_eq!(got.keys.s2c.to_vec(), hx(&p["s2c_hex"]));
        assert_eq!(got.confirm.to_vec(), hx(&p["confirm_hex"]));
    }
    let answer: Value = serde_json::from_str(s(&p["answer_body"])).unwrap();
    let a = &answer["pairs"][0];
    let enc = URL_SAFE_NO_PAD.decode(s(&a["enc"])).unwrap();
    let confirm = URL_SAFE_NO_PAD.decode(s(&a["confirm"])).unwrap();
    let pa = PairAnswer {
        pair_id: s(&a["pair_id"]),
        enc: &enc,
        expires_at: a["expires_at"].as_u64().unwrap(),
        confirm: &confirm,
    };
    // the man in the middle's confirmation (no ss_s) is refused; the real one accepted
    let mitm = hx(&p["mitm_confirm_hex"]);
    let again = || {
        ClientOffer::deterministic(
            &config,
            &arr(&p["client_eseed_hex"]),
            arr(&p["ephemeral_seed_hex"]),
        )
        .unwrap()
    };
    assert_eq!(
        again()
            .finish(
                &client_id,
                &PairAnswer {
                    confirm: &mitm,
                    ..pa
                }
            )
            .map(|_| ()),
        Err(RelayError::ServerAuthFailed)
    );
    let keys = offer.finish(&client_id, &pa).unwrap();
    assert_eq!(keys.c2s.to_vec(), hx(&p["c2s_hex"]));
    assert_eq!(keys.s2c.to_vec(), hx(&p["s2c_hex"]));
}

fn check_answer(
    name: &str,
    ans: &Value,
    s2c: &[u8; 32],
    ex: &Exchange<'_>,
    binding: &RequestBinding,
    want_plain: &[Vec<u8>],
) -> Vec<u8> {
    let status = ans["status"].as_u64().unwrap() as u16;
    let rn: [u8; 32] = arr(&ans["response_nonce_hex"]);
    let rc = ResponseControl::parse(s(&ans["x-veil-relay"])).unwrap();
    assert_eq!(
        (rc.pair_id, rc.seq, rc.response_nonce),
        (ex.pair_id, ex.seq, rn)
    );
    assert_eq!(rc.kind.flags(), s(&ans["flags"]), "{name}");
    assert_eq!(rc.to_header_value(), s(&ans["x-veil-relay"]));
    let rs = v2::labeled_extract(&rn, b"response", s2c);
    assert_eq!(rs.to_vec(), hx(&ans["response_secret_hex"]), "{name}");
    let mut key = [0u8; 32];
    v2::labeled_expand(&rs, b"key", b"", &mut key).unwrap();
    assert_eq!(key.to_vec(), hx(&ans["answer_key_hex"]), "{name}");
    let cipher = AnswerCipher::new(s2c, &rn).unwrap();
    let parts = ans["parts"].as_array().unwrap();
    assert_eq!(parts.len(), want_plain.len(), "{name}");
    let mut sealed_all = Vec::new();
    for (p, plain) in parts.iter().zip(want_plain) {
        let part = part(p["part"].as_u64().unwrap());
        assert_eq!(
            cipher.nonce(part).to_vec(),
            hx(&p["nonce_hex"]),
            "{name} {part:?}"
        );
        assert_eq!(
            ex.answer_ad(part, rc.kind, status, binding).unwrap(),
            hx(&p["ad_hex"]),
            "{name} {part:?}"
        );
        assert_eq!(plain, &hx(&p["plaintext_hex"]), "{name} {part:?}");
        let sealed = cipher
            .seal(ex, part, rc.kind, status, binding, plain)
            .unwrap();
        assert_eq!(sealed, hx(&p["sealed_hex"]), "{name} {part:?}");
        assert_eq!(
            &cipher
                .open(ex, part, rc.kind, status, binding, &sealed)
                .unwrap(),
            plain
        );
        sealed_all.extend_from_slice(&sealed);
    }
    assert_eq!(s(&ans["x-veil-relay-eh"]), s(&parts[0]["sealed_b64url"]));
    sealed_all
}

#[test]
fn exchanges() {
    let v = vectors();
    let prefix = s(&v["prefix"]);
    let client_id = s(&v["client_id"]["client_id"]);
    let pair_id = s(&v["pairing"]["pair_id"]);
    let c2s = arr(&v["pairing"]["c2s_hex"]);
    let s2c: [u8; 32] = arr(&v["pairing"]["s2c_hex"]);
    let req_cipher = RequestCipher::new(&c2s);
    let exchanges = v["exchanges"].as_array().unwrap();
    assert_eq!(exchanges.len(), 5);
    let mut answered_twice = 0;
    for x in exchanges {
        let name = s(&x["name"]);
        let ex = Exchange {
            pair_id,
            seq: x["seq"].as_u64().unwrap(),
            method: s(&x["method"]),
            scheme: s(&x["scheme"]),
            authority: s(&x["authority"]),
        };
        let body = x["body_hex"].as_str().map(|b| hex::decode(b).unwrap());
        let has_body = body.is_some();
        let req = &x["request"];
        let control = RequestControl {
            client_id,
            pair_id,
            seq: ex.seq,
            body: has_body,
        };
        assert_eq!(control.to_header_value(), s(&req["x-veil-relay"]), "{name}");
        assert_eq!(
            RequestControl::parse(s(&req["x-veil-relay"])).unwrap(),
            control
        );
        let mut want = vec![
            s(&x["path_and_query"]).as_bytes().to_vec(),
            encode_headers(&headers(&x["headers"])),
        ];
        if let Some(b) = &body {
            want.push(b.clone());
        }
        let parts = req["parts"].as_array().unwrap();
        assert_eq!(parts.len(), want.len());
        let mut sealed_parts = Vec::new();
        for (p, plain) in parts.iter().zip(&want) {
            let part = part(p["part"].as_u64().unwrap());
            assert_eq!(
                ex.request_nonce(part).to_vec(),
                hx(&p["nonce_hex"]),
                "{name}"
            );
            assert_eq!(
                ex.request_ad(part, has_body).unwrap(),
                hx(&p["ad_hex"]),
                "{name} {part:?}"
            );
            let sealed = req_cipher.seal(&ex, part, has_body, plain).unwrap();
            assert_eq!(sealed, hx(&p["sealed_hex"]), "{name} {part:?}");
            assert_eq!(
                &req_cipher.open(&ex, part, has_body, &sealed).unwrap(),
                plain
            );
            sealed_parts.push(sealed);
        }
        assert_eq!(
            encoded_path(prefix, &URL_SAFE_NO_PAD.encode(&sealed_parts[0])),
            s(&req[":path"])
        );
        assert_eq!(
            URL_SAFE_NO_PAD.encode(&sealed_parts[1]),
            s(&req["x-veil-relay-eh"])
        );
        let binding = RequestBinding::of(&sealed_parts[0], &sealed_parts[1]).unwrap();
        assert_eq!(binding.0.to_vec(), hx(&x["request_binding_hex"]), "{name}");

        let plain = &x["answer_plain"];
        let want_answer: Vec<Vec<u8>> = match plain["error_code"].as_str() {
            Some(code) => {
                assert_eq!(RelayError::from_code(code).map(|e| e.code()), Some(code));
                vec![code.as_bytes().to_vec()]
            }
            None => {
                let mut w = vec![encode_headers(&headers(&plain["sealed_headers"]))];
                if let Some(b) = plain["body_hex"].as_str() {
                    w.push(hex::decode(b).unwrap());
                }
                w
            }
        };
        let first = check_answer(name, &x["answer"], &s2c, &ex, &binding, &want_answer);
        if !x["answer_again"].is_null() {
            let second = check_answer(name, &x["answer_again"], &s2c, &ex, &binding, &want_answer);
            assert_ne!(
                first, second,
                "{name}: a second answer must not repeat the first"
            );
            answered_twice += 1;
        }
        if plain["error_code"].is_string() {
            assert_eq!(s(&x["answer"]["flags"]), AnswerKind::Error.flags());
        }
    }
    assert_eq!(answered_twice, 1);
}
