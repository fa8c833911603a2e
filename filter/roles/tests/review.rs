//! Defects a review of the filter found (issue #15, item 5), each fixed in the move to the
//! host seam: every test here failed on the code as it was.

mod common;

use common::*;
use serde_json::json;
use veil_roles::host::{Action, BodyKind};
use veil_roles::testing::answer;

const YEAR_MS: i64 = 366 * 86_400_000;

/// A worker whose epoch clock runs a year ahead, holding next year's keys (as the
/// keyservice answers for it: current and next epoch on *its* clock).
fn year_ahead() -> Fix {
    let f = Fix::new(config(json!({"test_clock_offset_secs": YEAR_MS / 1000})));
    f.worker.tick(&*f.env);
    let fetch = f.sent().into_iter().next().unwrap();
    let e = epoch_at(f.env.now_ms() + YEAR_MS);
    let kids = [kid(1, e), kid(1, e.next(rotation()))];
    f.worker
        .on_root_callout(&*f.env, fetch.id, &answer(200, &current_answer(1, &kids)));
    f
}

/// A hostcall failure on an unseal route was answered `seal-failed` (500) and counted as a
/// seal failure.
#[test]
fn a_hostcall_failure_on_an_unseal_route_is_unseal_failed() {
    let f = Fix::ready();
    f.env.fail("replace_header");
    let (h, mut s) = f.stream();
    request(&h, "GET", "/api/v1/x", &[("accept-encoding", "br")]);
    assert_eq!(s.on_request_headers(&h, true), Action::Pause);
    assert_eq!(refused(&h), (502, "unseal-failed".into()));
    assert_eq!(f.counter("veil.seal.failed"), 0);
}

/// The search chose its epochs on the host clock, not the epoch clock the seal role uses.
#[test]
fn the_search_chooses_its_epochs_on_the_epoch_clock() {
    let f = year_ahead();
    let (h, mut s) = f.stream();
    let (_, b) = send(
        &h,
        &mut s,
        "POST",
        "/api/v1/search/~/search/events?from=-1h",
        &[],
        br#"{"query":{"term":{"request.body.email":"a@b.c"}}}"#,
    );
    assert_eq!(b, Action::Continue, "{:?}", h.reply());
    let v = json_of(&body(&h, BodyKind::Request));
    let term = v["query"]["terms"]["request.body.email"][0]
        .as_str()
        .unwrap();
    let ahead = kid(1, epoch_at(f.env.now_ms() + YEAR_MS));
    assert!(term.contains(&ahead), "{term} is not under {ahead}");
    assert!(
        f.sent().is_empty(),
        "no key fetched for the host clock's epoch"
    );
}

/// The key refresh checked for the current epoch's key on the host clock: a worker whose
/// epoch clock is ahead fetched on every tick.
#[test]
fn the_refresh_checks_the_current_key_on_the_epoch_clock() {
    let f = year_ahead();
    for _ in 0..3 {
        f.env.advance_ms(200);
        f.worker.tick(&*f.env);
    }
    assert!(
        f.sent().is_empty(),
        "fresh keys for the epoch clock: nothing to fetch"
    );
}

/// Sealing already used the epoch clock; it still does.
#[test]
fn sealing_uses_the_epoch_clock() {
    let f = year_ahead();
    let sealed = json_of(&seal_with(&f, &json!({"name": "Ann"})));
    let ahead = kid(1, epoch_at(f.env.now_ms() + YEAR_MS));
    assert!(sealed["name"].as_str().unwrap().contains(&ahead));
}
