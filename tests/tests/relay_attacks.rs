//! Attacks on the relay (issue #10, item 4), end to end through real Envoy, the filter, the
//! keyservice and the recording demo upstream, sent with the wire-level test client
//! (`veil_e2e::relay`) that lets an attacker pick every byte: replay, reorder past the
//! window, ciphertexts moved to another pair / `seq` / request, tampered and truncated
//! parts and control headers, forged and borrowed client ids, tampered answers (refused by
//! the client's `open`), and pairing floods against bounded stores.
//!
//! Every attack must be refused with its stable code; the recording upstream must never see
//! one (attack paths are marked `attack`); Envoy's own `refused` counter must agree; no VM
//! may have restarted (a panic would reload it). Each test prints its tally.

use std::collections::BTreeMap;

use veil_core::relay::ClientIdSecret;
use veil_e2e::http::{self, Response};
use veil_e2e::relay::{self, Encoded, RawPair};
use veil_e2e::{Stack, StackOptions};

use serde_json::{json, Value};

/// Replay window of these tests (filter and keyservice), small so "beyond the window" is
/// cheap to reach.
const WINDOW: u64 = 16;

/// What the attacks did.
#[derive(Default, Debug)]
struct Tally {
    sent: u64,
    refused: u64,
    /// Attack requests the upstream saw (from its recording, counted at the end).
    forwarded: u64,
    /// Attacks answered other than with their refusal (e.g. an encoded answer).
    leaked: u64,
    /// Well-formed requests sent alongside, which must work.
    legit: u64,
}

struct Attacker<'a> {
    stack: &'a Stack,
    tally: Tally,
    /// Envoy's wasm stats before the attacks.
    wasm_before: BTreeMap<String, u64>,
}

impl Attacker<'_> {
    /// Sends one attack; it must be refused with `status` and `code`.
    fn refused(&mut self, what: &str, e: &Encoded, status: u16, code: &str) {
        self.tally.sent += 1;
        let r = e.send(self.stack.listen);
        let ok = r.status == status
            && r.header("x-veil-relay-error") == Some(code)
            // on a known pair the refusal is also sealed for the client (flags `e`)
            && r.header("x-veil-relay").is_none_or(|c| {
                veil_core::relay::v2::ResponseControl::parse(c)
                    .is_ok_and(|rc| rc.kind == veil_core::relay::v2::AnswerKind::Error)
            })
            && r.header("content-type") == Some("application/problem+json");
        if ok {
            self.tally.refused += 1;
        } else {
            self.tally.leaked += 1;
        }
        assert!(
            ok,
            "{what}: expected {status} {code}, got {} {:?}: {}",
            r.status,
            r.header("x-veil-relay-error"),
            r.text()
        );
    }

    /// A well-formed request that must come back decoded with 200.
    fn works(&mut self, p: &RawPair, id: &str, seq: u64, tag: &str) -> Response {
        self.tally.legit += 1;
        let path = format!("/app/echo/legit-{tag}");
        let e = p.encode(
            id,
            seq,
            "POST",
            &path,
            &[("x-tag", tag)],
            Some(tag.as_bytes()),
        );
        let r = e.send(self.stack.listen);
        let d = p
            .decode(seq, "POST", &r)
            .unwrap_or_else(|err| panic!("legit {tag} (seq {seq}): {err}"));
        assert_eq!(d.status, 200, "legit {tag}");
        assert_eq!(d.json()["path"], path.as_str());
        r
    }

    /// Checks the upstream saw only the legit requests, compares Envoy's counter, prints.
    fn finish(mut self, name: &str, refused_before: u64) -> Tally {
        let seen = self.stack.recorded();
        self.tally.forwarded = seen.iter().filter(|r| r.path.contains("attack")).count() as u64;
        let legit_seen = seen.iter().filter(|r| r.path.contains("legit")).count() as u64;
        let envoy_refused = self.stack.stat("wasmcustom.veil.relay.refused") - refused_before;
        println!(
            "{name}: requests sent {}, refused {}, forwarded {}, leaked {} (legit alongside: {} sent, {} reached the upstream; Envoy counted {} refusals)",
            self.tally.sent,
            self.tally.refused,
            self.tally.forwarded,
            self.tally.leaked,
            self.tally.legit,
            legit_seen,
            envoy_refused
        );
        assert_eq!(
            self.tally.forwarded, 0,
            "{name}: attacks reached the upstream"
        );
        assert_eq!(self.tally.leaked, 0, "{name}");
        assert_eq!(self.tally.refused, self.tally.sent, "{name}");
        assert_eq!(legit_seen, self.tally.legit, "{name}: legit requests lost");
        assert_eq!(
            envoy_refused, self.tally.refused,
            "{name}: the filter's refused counter disagrees"
        );
        assert_vms_never_restarted(self.stack, &self.wasm_before);
        self.tally
    }
}

/// Envoy's wasm stats (`wasm.*`, not the filter's own `wasmcustom.*`).
fn wasm_stats(stack: &Stack) -> BTreeMap<String, u64> {
    let r = http::get(stack.admin, "/stats?filter=^wasm\\.").unwrap();
    r.text()
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// A panic in the filter kills its VM and Envoy reloads it (a new VM is created): none may
/// have happened since `before` (taken once the stack was up).
/// Natively there is no VM: no hook may have panicked (each would have answered fail-closed
/// and counted `veil.native.hook_failed`).
fn assert_vms_never_restarted(stack: &Stack, before: &BTreeMap<String, u64>) {
    if stack.shell == veil_e2e::Shell::Native {
        assert_eq!(
            stack.stat("veil.native.hook_failed"),
            0,
            "a native hook failed"
        );
        assert!(
            stack.stat("veil.keys.fetch_ok") >= 1,
            "the native stats are read"
        );
        return;
    }
    let now = wasm_stats(stack);
    for stat in [
        "wasm.veil.vm_reload",
        "wasm.veil.vm_reload_success",
        "wasm.veil.vm_reload_failure",
        "wasm.veil.vm_reload_backoff",
    ] {
        assert_eq!(
            now.get(stat),
            Some(&0),
            "{stat}: a wasm VM was restarted ({now:?})"
        );
    }
    let created = "wasm.envoy.wasm.runtime.v8.created";
    assert!(now.contains_key(created), "{now:?}");
    assert_eq!(
        now.get(created),
        before.get(created),
        "a wasm VM was created anew"
    );
    // The filter is alive and answering after everything.
    let r = http::get(stack.listen, "/veil/echo/alive").unwrap();
    assert_eq!(r.json()["echo"], "alive");
}

fn stack(mode: &str, extra_relay: Value, keyservice_env: &[(&str, &str)]) -> Stack {
    let mut config = veil_e2e::demo_filter_config();
    config["relay"]["replay"] = json!({"mode": mode, "window": WINDOW});
    for (k, v) in extra_relay.as_object().cloned().unwrap_or_default() {
        config["relay"][k] = v;
    }
    let mut env = vec![("RELAY_REPLAY_WINDOW".to_string(), WINDOW.to_string())];
    env.extend(
        keyservice_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Stack::start_with(StackOptions {
        filter_config: config,
        keyservice_env: env,
        ..Default::default()
    })
}

fn header_mut<'e>(e: &'e mut Encoded, name: &str) -> &'e mut String {
    &mut e
        .headers
        .iter_mut()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

fn control(e: &mut Encoded) -> &mut String {
    header_mut(e, "x-veil-relay")
}

fn path_part(e: &Encoded) -> String {
    e.target.strip_prefix("/veil/x/").unwrap().to_string()
}

/// Flips one base64url character (the string stays base64url).
fn flip_b64(s: &str, at: usize) -> String {
    let mut b = s.as_bytes().to_vec();
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

/// A client id of the right shape (uuid v4 "." 64 hex) whose HMAC is under another secret.
fn forged_client_id() -> String {
    ClientIdSecret::new(b"not the relay's secret, but 32+ bytes long")
        .unwrap()
        .issue([0x5a; 16])
}

/// Tampering, splicing, replay, reordering, forged ids and truncation, in one replay mode.
fn request_attacks(mode: &str) {
    let stack = stack(mode, json!({}), &[]);
    let refused_before = stack.stat("wasmcustom.veil.relay.refused");
    let wasm_before = wasm_stats(&stack);
    let id = relay::discover(stack.listen);
    let mut pairs = relay::pair(stack.listen, &id, 2);
    let (a, b) = (pairs.remove(0), pairs.remove(0));
    let other_id = relay::discover(stack.listen);
    let c = relay::pair(stack.listen, &other_id, 1).remove(0);
    stack.clear_recorded();
    let mut at = Attacker {
        stack: &stack,
        tally: Tally::default(),
        wasm_before,
    };
    let attack = |p: &RawPair, cid: &str, seq: u64, body: Option<&[u8]>| {
        p.encode(
            cid,
            seq,
            "POST",
            &format!("/app/echo/attack-{seq}"),
            &[("x-secret", "s")],
            body,
        )
    };

    // --- Replay and reordering past the window.
    let e = a.encode(&id, 1, "POST", "/app/echo/legit-1", &[], Some(b"1"));
    let r = e.send(stack.listen);
    assert_eq!(a.decode(1, "POST", &r).unwrap().status, 200);
    at.tally.legit += 1;
    // The same bytes again: the upstream must not see "legit-1" twice.
    at.refused("replay of seq 1", &e, 409, "relay-replay");
    at.works(&a, &id, 40, "40");
    // 40 − WINDOW is just outside, 40 − WINDOW + 1 just inside (accepted once).
    at.refused(
        "seq beyond the window",
        &attack(&a, &id, 40 - WINDOW, Some(b"x")),
        409,
        "relay-replay",
    );
    at.works(&a, &id, 40 - WINDOW + 1, "25");
    at.refused(
        "replay inside the window",
        &a.encode(
            &id,
            40 - WINDOW + 1,
            "POST",
            "/app/echo/attack-in",
            &[],
            Some(b"x"),
        ),
        409,
        "relay-replay",
    );
    at.refused(
        "seq 40 again",
        &attack(&a, &id, 40, None),
        409,
        "relay-replay",
    );

    // --- Ciphertexts moved: to another pair (same client), to another seq, parts spliced
    // between two requests of the same pair. All on seqs not used yet. (A body part opens
    // only once the body is in, after the window moved: those attacks get a seq each.)
    let mut e = attack(&a, &id, 50, Some(b"moved"));
    *control(&mut e) = format!("v2,{id},{},50,uhb", b.pair_id);
    at.refused(
        "parts of pair A sent as pair B",
        &e,
        400,
        "relay-decode-failed",
    );
    let mut e = attack(&a, &id, 50, Some(b"moved"));
    *control(&mut e) = format!("v2,{id},{},51,uhb", a.pair_id);
    at.refused(
        "parts of seq 50 sent as seq 51",
        &e,
        400,
        "relay-decode-failed",
    );
    let x = attack(&a, &id, 52, Some(b"body of 52"));
    let mut y = attack(&a, &id, 53, Some(b"body of 53"));
    y.body = x.body.clone();
    at.refused(
        "body part of another request",
        &y,
        400,
        "relay-decode-failed",
    );
    let mut y = attack(&a, &id, 54, Some(b"body of 54"));
    y.target = x.target.clone();
    at.refused(
        "path part of another request",
        &y,
        400,
        "relay-decode-failed",
    );
    let mut y = attack(&a, &id, 54, Some(b"body of 54"));
    *header_mut(&mut y, "x-veil-relay-eh") = header_mut(&mut x.clone(), "x-veil-relay-eh").clone();
    at.refused(
        "headers part of another request",
        &y,
        400,
        "relay-decode-failed",
    );
    let mut y = attack(&b, &id, 52, Some(b"body of 52"));
    y.body = x.body.clone();
    at.refused(
        "body part of pair A on pair B",
        &y,
        400,
        "relay-decode-failed",
    );
    // seq 54 was never used: the path and headers parts are opened before the window moves.
    at.works(&a, &id, 54, "54");

    // --- Tampered bytes in each part, and in what each part's AD binds.
    let e = attack(&a, &id, 60, Some(b"tamper me"));
    let mut t = e.clone();
    t.target = format!("/veil/x/{}", flip_b64(&path_part(&e), 3));
    at.refused("tampered path part", &t, 400, "relay-decode-failed");
    let mut t = e.clone();
    let eh = header_mut(&mut t, "x-veil-relay-eh");
    *eh = flip_b64(eh, 7);
    at.refused("tampered headers part", &t, 400, "relay-decode-failed");
    let mut t = e.clone();
    t.method = "PUT".into();
    at.refused("method changed", &t, 400, "relay-decode-failed");
    let mut t = attack(&a, &id, 60, None);
    *control(&mut t) = format!("v2,{id},{},60,uhb", a.pair_id);
    t.headers
        .push(("content-type".into(), "application/octet-stream".into()));
    t.body = e.body.clone();
    at.refused("flags uh → uhb with a body", &t, 400, "relay-decode-failed");
    // None of those used up seq 60: the genuine request on it still passes once.
    at.works(&a, &id, 60, "60");
    at.refused("seq 60 again", &e, 409, "relay-replay");
    let mut t = attack(&a, &id, 61, Some(b"tamper me"));
    t.body[0] ^= 0x80;
    at.refused("tampered body (ciphertext)", &t, 400, "relay-decode-failed");
    let mut t = attack(&a, &id, 62, Some(b"tamper me"));
    let last = t.body.len() - 1;
    t.body[last] ^= 1;
    at.refused("tampered body (tag)", &t, 400, "relay-decode-failed");

    // --- Client ids: right shape with a wrong HMAC, a flipped HMAC digit, another
    // (valid) client's id on this client's pair, this client's id on the other's pair.
    at.refused(
        "forged client id (other secret)",
        &attack(&a, &forged_client_id(), 70, None),
        401,
        "relay-bad-client-id",
    );
    let mut flipped = id.clone().into_bytes();
    let l = flipped.len() - 1;
    flipped[l] = if flipped[l] == b'0' { b'1' } else { b'0' };
    at.refused(
        "client id with a flipped HMAC digit",
        &attack(&a, &String::from_utf8(flipped).unwrap(), 70, None),
        401,
        "relay-bad-client-id",
    );
    at.refused(
        "another client's valid id on this pair",
        &attack(&a, &other_id, 70, None),
        401,
        "relay-pair-unknown",
    );
    at.refused(
        "this client's id on another client's pair",
        &attack(&c, &id, 70, None),
        401,
        "relay-pair-unknown",
    );
    let e = attack(&c, &other_id, 71, None);
    let mut t = e.clone();
    *control(&mut t) = format!("v2,{id},{},71,uh", c.pair_id);
    at.refused(
        "another client's request re-labelled",
        &t,
        401,
        "relay-pair-unknown",
    );
    at.works(&c, &other_id, 71, "c71");

    // --- Truncated messages.
    let mut t = attack(&a, &id, 81, Some(b"a body to cut short"));
    t.body.pop();
    at.refused(
        "body ciphertext one byte short",
        &t,
        400,
        "relay-decode-failed",
    );
    let mut t = attack(&a, &id, 82, Some(b"a body to cut short"));
    t.body.truncate(15);
    at.refused("body shorter than the tag", &t, 400, "relay-decode-failed");
    let mut t = attack(&a, &id, 83, Some(b"a body to cut short"));
    t.body.clear();
    at.refused(
        "body part announced, none sent",
        &t,
        400,
        "relay-bad-request",
    );
    let e = attack(&a, &id, 80, Some(b"a body to cut short"));
    let full = control(&mut e.clone()).clone();
    for (what, cut) in [
        (
            "control header without flags",
            full.rsplit_once(',').unwrap().0.to_string(),
        ),
        (
            "control header without seq",
            full.splitn(4, ',').take(3).collect::<Vec<_>>().join(","),
        ),
        (
            "control header cut inside the pair id",
            full[..full.find(&a.pair_id).unwrap() + 10].to_string(),
        ),
        (
            "control header cut inside the client id",
            full[..40].to_string(),
        ),
        ("control header \"v2\" only", "v2".to_string()),
        (
            "a version 1 control header (downgrade)",
            full.replacen("v2,", "v1,", 1),
        ),
        ("empty control header", String::new()),
        (
            "control header with pair id cut to 21",
            full.replace(&a.pair_id, &a.pair_id[..21]),
        ),
    ] {
        let mut t = e.clone();
        *control(&mut t) = cut;
        at.refused(what, &t, 400, "relay-bad-request");
    }
    let mut t = e.clone();
    *control(&mut t) = full.replace(&id, &id[..id.len() - 1]);
    at.refused(
        "client id one character short",
        &t,
        401,
        "relay-bad-client-id",
    );
    let eh_full = header_mut(&mut e.clone(), "x-veil-relay-eh").clone();
    for (what, cut) in [
        (
            "eh one character short",
            eh_full[..eh_full.len() - 1].to_string(),
        ),
        (
            "eh without its tag",
            eh_full[..eh_full.len() - 22].to_string(),
        ),
        ("eh cut to 4 characters", eh_full[..4].to_string()),
        ("empty eh", String::new()),
    ] {
        let mut t = e.clone();
        *header_mut(&mut t, "x-veil-relay-eh") = cut;
        at.refused(what, &t, 400, "relay-decode-failed");
    }
    let mut t = e.clone();
    t.headers.retain(|(n, _)| n != "x-veil-relay-eh");
    at.refused("eh missing", &t, 400, "relay-bad-request");
    let mut t = e.clone();
    let p = path_part(&e);
    t.target = format!("/veil/x/{}", &p[..p.len() - 3]);
    at.refused("path part truncated", &t, 400, "relay-decode-failed");
    // After all that, seq 80 is still unused.
    at.works(&a, &id, 80, "80");

    // Pair B was only ever attacked (its window moved to 52 by the spliced body, which
    // opens only after the window moved): it still works on the next seq.
    at.works(&b, &id, 53, "b53");
    let tally = at.finish(&format!("request attacks ({mode})"), refused_before);
    // Every case above ran (none skipped by an early return).
    assert_eq!(tally.sent, 40, "{tally:?}");
}

#[test]
fn request_attacks_local_window() {
    request_attacks("local");
}

#[test]
fn request_attacks_global_window() {
    request_attacks("global");
}

/// The client side: an answer changed on the way is refused by `open` (core's, as every
/// client uses it), whatever was changed.
#[test]
fn tampered_answers_are_refused_by_the_client() {
    let stack = stack("local", json!({}), &[]);
    let id = relay::discover(stack.listen);
    let mut pairs = relay::pair(stack.listen, &id, 2);
    let (a, b) = (pairs.remove(0), pairs.remove(0));
    let send = |p: &RawPair, seq: u64| {
        p.encode(
            &id,
            seq,
            "POST",
            "/app/echo/answer",
            &[],
            Some(b"answer me"),
        )
        .send(stack.listen)
    };
    let r = send(&a, 1);
    let good = a.decode(1, "POST", &r).unwrap();
    assert_eq!(good.status, 200);
    assert!(good.sealed_header("content-type").is_some());
    assert!(!r.body.is_empty());
    let other = send(&a, 2);
    assert!(a.decode(2, "POST", &other).is_ok());
    let on_b = send(&b, 1);
    assert!(b.decode(1, "POST", &on_b).is_ok());

    let set = |r: &mut Response, name: &str, v: String| {
        r.headers.iter_mut().find(|(n, _)| n == name).unwrap().1 = v;
    };
    let ctl = r.header("x-veil-relay").unwrap().to_string();
    let eh = r.header("x-veil-relay-eh").unwrap().to_string();
    let mut cases: Vec<(&str, Response, u64, &str, &RawPair)> = Vec::new();
    let mut t = r.clone();
    t.body[3] ^= 1;
    cases.push(("body byte flipped", t, 1, "POST", &a));
    let mut t = r.clone();
    let l = t.body.len() - 1;
    t.body[l] ^= 1;
    cases.push(("body tag flipped", t, 1, "POST", &a));
    let mut t = r.clone();
    t.body.pop();
    cases.push(("body truncated", t, 1, "POST", &a));
    let mut t = r.clone();
    t.body.clear();
    cases.push(("body removed", t, 1, "POST", &a));
    let mut t = r.clone();
    set(&mut t, "x-veil-relay-eh", flip_b64(&eh, 5));
    cases.push(("sealed headers tampered", t, 1, "POST", &a));
    let mut t = r.clone();
    set(&mut t, "x-veil-relay-eh", eh[..eh.len() - 2].to_string());
    cases.push(("sealed headers truncated", t, 1, "POST", &a));
    let mut t = r.clone();
    t.status = 201;
    cases.push(("status changed", t, 1, "POST", &a));
    let mut t = r.clone();
    t.status = 500;
    cases.push(("status changed to an error", t, 1, "POST", &a));
    let mut t = r.clone();
    set(&mut t, "x-veil-relay", ctl.replace(",hb", ",h"));
    t.body.clear();
    cases.push(("body dropped and flags hb → h", t, 1, "POST", &a));
    let mut t = r.clone();
    set(&mut t, "x-veil-relay", ctl.replace(",1,", ",2,"));
    cases.push(("answer relabelled to the next seq", t, 2, "POST", &a));
    cases.push(("answer of seq 2 for seq 1", other.clone(), 1, "POST", &a));
    let mut t = other.clone();
    set(&mut t, "x-veil-relay", ctl.clone());
    cases.push(("answer of seq 2 relabelled as seq 1", t, 1, "POST", &a));
    let mut t = r.clone();
    set(&mut t, "x-veil-relay", ctl.replace(&a.pair_id, &b.pair_id));
    cases.push(("answer of pair A relabelled as pair B", t, 1, "POST", &b));
    let mut t = on_b.clone();
    set(
        &mut t,
        "x-veil-relay",
        on_b.header("x-veil-relay")
            .unwrap()
            .replace(&b.pair_id, &a.pair_id),
    );
    cases.push(("answer of pair B relabelled as pair A", t, 1, "POST", &a));
    let mut t = r.clone();
    t.headers.retain(|(n, _)| n != "x-veil-relay-eh");
    cases.push(("sealed headers removed", t, 1, "POST", &a));
    let mut t = r.clone();
    t.headers.retain(|(n, _)| n != "x-veil-relay");
    cases.push(("control header removed (a hop's page)", t, 1, "POST", &a));
    let mut t = r.clone();
    set(&mut t, "x-veil-relay", ctl[..ctl.len() - 3].to_string());
    cases.push(("control header truncated", t, 1, "POST", &a));
    let n = cases.len();
    for (what, t, seq, method, p) in cases {
        assert!(
            p.decode(seq, method, &t).is_err(),
            "the client accepted a tampered answer: {what}"
        );
    }
    // The genuine answer still opens (the checks above are not vacuous).
    assert_eq!(a.decode(1, "POST", &r).unwrap(), good);
    // An answer is bound to the request it answers (its binding), not only to its `seq`:
    // it does not open for another request on the same pair and seq — another method,
    // another path (e.g. a copy accepted by another instance in `local` mode).
    for (what, method, path) in [
        (
            "answer opened for another method",
            "PUT",
            "/app/echo/answer",
        ),
        (
            "answer opened for another request on its seq",
            "POST",
            "/app/echo/other",
        ),
    ] {
        let req = a.encode(&id, 1, method, path, &[], Some(b"answer me"));
        assert!(
            a.decode_for(&req, &r).is_err(),
            "the client accepted a tampered answer: {what}"
        );
    }
    let n = n + 2;
    println!("tampered answers: {n} variants, {n} refused by the client, 0 accepted");
}

/// Pairing floods: the keyservice's memory store stays at RELAY_MAX_SESSIONS (evictions
/// counted in /metrics) and the filter's slot table at `pair_cache_slots` (every new pair
/// past it takes a live pair's slot, counted); what was evicted is refused, never
/// forwarded, and what is live keeps working.
#[test]
fn pairing_floods_stay_bounded() {
    const MAX_SESSIONS: u64 = 12;
    const SLOTS: u64 = 4;
    const PAIRINGS: u64 = 10;
    const PER_PAIRING: u64 = 5;
    // `global`: every request asks the keyservice, so a pair it evicted is refused even
    // where a slot still holds it (in `local` mode the slot would serve it until its idle TTL).
    let stack = stack(
        "global",
        json!({"pair_cache_slots": SLOTS}),
        &[("RELAY_MAX_SESSIONS", &MAX_SESSIONS.to_string())],
    );
    let refused_before = stack.stat("wasmcustom.veil.relay.refused");
    let wasm_before = wasm_stats(&stack);
    let evictions_before = stack.stat("wasmcustom.veil.relay.slot_evictions");
    let id = relay::discover(stack.listen);
    let mut all = Vec::new();
    for _ in 0..PAIRINGS {
        all.extend(relay::pair(stack.listen, &id, PER_PAIRING as usize));
    }
    let total = PAIRINGS * PER_PAIRING;
    assert_eq!(all.len() as u64, total);

    // The keyservice: bounded, the rest evicted and counted.
    let sessions = stack.keyservice_metric("veil_keyservice_relay_sessions", "");
    let evicted = stack.keyservice_metric("veil_keyservice_relay_evictions_total", "");
    println!("pairing flood: {total} pairs made; keyservice sessions {sessions} (max {MAX_SESSIONS}), evictions {evicted}");
    assert_eq!(sessions, MAX_SESSIONS);
    assert_eq!(evicted, total - MAX_SESSIONS);
    // The filter: at most SLOTS pairs held, so every pair past that took a live one's slot.
    let slot_evictions = stack.stat("wasmcustom.veil.relay.slot_evictions") - evictions_before;
    println!("pairing flood: filter slot evictions {slot_evictions} ({SLOTS} slots)");
    assert!(
        slot_evictions >= total - SLOTS && slot_evictions < total,
        "{slot_evictions}: the slot table is not bounded at {SLOTS}"
    );

    stack.clear_recorded();
    let mut at = Attacker {
        stack: &stack,
        tally: Tally::default(),
        wasm_before,
    };
    // The evicted pairs (the oldest) are gone everywhere: refused, not forwarded.
    let cut = (total - MAX_SESSIONS) as usize;
    for (i, p) in all[..cut].iter().enumerate() {
        let e = p.encode(
            &id,
            1,
            "GET",
            &format!("/app/echo/attack-evicted-{i}"),
            &[],
            None,
        );
        at.refused("a pair the flood evicted", &e, 401, "relay-pair-unknown");
    }
    // The live ones work, round after round, through 4 slots (fetched again by id when
    // neither the worker's cache nor a slot holds them).
    let fetches_before = stack.stat("wasmcustom.veil.relay.pair_fetches");
    for round in 1..=2u64 {
        for (i, p) in all[cut..].iter().enumerate() {
            at.works(p, &id, round, &format!("r{round}-p{i}"));
        }
    }
    let fetches = stack.stat("wasmcustom.veil.relay.pair_fetches") - fetches_before;
    println!("pairing flood: {fetches} pair fetches for {MAX_SESSIONS} live pairs over 2 rounds");
    assert!(
        fetches >= 1,
        "no live pair was fetched again: the slots held them all"
    );
    // A replay of round 1 is still refused (the keyservice's window, shared by every slot
    // and worker).
    let p = &all[cut];
    at.refused(
        "replay of round 1",
        &p.encode(&id, 1, "GET", "/app/echo/attack-replay", &[], None),
        409,
        "relay-replay",
    );
    // A pairing over max_pairs, and a pairing body of the wrong shape, are refused.
    for body in [
        json!({"keys": vec!["AAAA"; 6]}).to_string(),
        r#"{"keys": []}"#.to_string(),
        r#"{"keys": "x"}"#.to_string(),
        "not json".to_string(),
    ] {
        at.tally.sent += 1;
        let r = http::request(
            stack.listen,
            "POST",
            "/veil/pair",
            &[
                ("x-veil-client-id", &id),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.header("x-veil-relay-error"), Some("relay-bad-request"));
        at.tally.refused += 1;
    }
    assert_eq!(
        stack.keyservice_metric("veil_keyservice_relay_sessions", ""),
        MAX_SESSIONS
    );
    at.finish("pairing flood", refused_before);
}
