//! The key refresh: keeps the current data keys fresh from the worker's tick, sharing one
//! fetch between workers through shared data.
//!
//! ```text
//! Idle ──(no current key, or fetched_at older than refresh_secs)──► InFlight
//! InFlight ──(200 + keys)──► Idle (installed, published)
//!     │  └──(answer missing, error status, bad body / not sent)──► Backoff
//!     └──(no answer after timeout + 1 s)──► may fetch again
//! Backoff ──(200 ms · 2^failures, at most 5 s)──► may fetch again
//! ```
//!
//! `failures` counts consecutive failed fetches, whatever failed (the call, the status, the
//! body): a keyservice answering 503 is asked no more often than an unreachable one. Only
//! keys installed reset it.
//!
//! Before fetching, the tick adopts what another worker published. The current epoch is
//! chosen on the epoch clock (`test_clock_offset_secs` included), the refresh timers on the
//! wall clock.

use veil_core::keyservice_answer::{parse_current, with_fetched_at, SHARED_KEY};

use crate::clock;
use crate::host::{CalloutAnswer, CalloutId, Host, Level, SharedData};
use crate::keys::KeyCtx;
use crate::keyservice;
use crate::metrics::Metrics;

const MAX_BACKOFF_MS: i64 = 5_000;

/// The current keys' fetch: in flight, or when the next one may start.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    #[default]
    Idle,
    InFlight {
        id: CalloutId,
        started_ms: i64,
        /// Consecutive failed fetches before this one.
        failures: u32,
    },
    Backoff {
        until_ms: i64,
        failures: u32,
    },
}

/// The tick's part: adopt shared keys, and fetch if they are missing or stale.
pub fn tick(k: &KeyCtx<'_>, h: &dyn Host) {
    let (Ok(now_ms), Ok(epoch_now)) = (clock::wall_ms(h), clock::epoch_secs(h, k.config)) else {
        return;
    };
    let now = now_ms / 1000;
    // Adopt what another worker fetched.
    let (have_current, fetched_at) = match k.cache.try_borrow_mut() {
        Ok(mut keys) => {
            if let Err(e) = keys.refresh_from_shared(&k.records.over(h)) {
                h.log(Level::Warn, &format!("veil: shared keys unusable: {e}"));
            }
            (
                keys.sealing_key(epoch_now, k.config.rotation).is_some(),
                keys.fetched_at(),
            )
        }
        Err(_) => return,
    };
    let refresh = i64::try_from(k.config.keyservice.refresh_secs).unwrap_or(60);
    let stale = fetched_at.is_none_or(|t| now - t >= refresh);
    if have_current && !stale {
        return;
    }
    let Ok(state) = k.refresh.try_borrow().map(|s| *s) else {
        return;
    };
    let failures = match state {
        Refresh::InFlight { failures, .. } | Refresh::Backoff { failures, .. } => failures,
        Refresh::Idle => 0,
    };
    match state {
        Refresh::InFlight { started_ms, .. } => {
            let timeout = i64::try_from(k.config.keyservice.timeout_ms).unwrap_or(2000);
            if now_ms - started_ms < timeout + 1000 {
                return;
            }
        }
        Refresh::Backoff { until_ms, .. } if now_ms < until_ms => return,
        _ => {}
    }
    match keyservice::send(
        h,
        &k.config.keyservice,
        "GET",
        "/v1/data-keys/current",
        None,
    ) {
        Ok(id) => set(
            k,
            Refresh::InFlight {
                id,
                started_ms: now_ms,
                failures,
            },
        ),
        Err(e) => {
            h.log(Level::Warn, &format!("veil: key refresh: {e}"));
            failed(k, h, now_ms, failures);
        }
    }
}

fn set(k: &KeyCtx<'_>, state: Refresh) {
    if let Ok(mut s) = k.refresh.try_borrow_mut() {
        *s = state;
    }
}

/// A fetch failed after `before` consecutive failures: back off longer.
fn failed(k: &KeyCtx<'_>, h: &dyn Host, now_ms: i64, before: u32) {
    Metrics::add(h, k.metrics.key_fetch_failed, 1);
    let failures = before.saturating_add(1);
    let delay = (200i64 << failures.min(5)).min(MAX_BACKOFF_MS);
    set(
        k,
        Refresh::Backoff {
            until_ms: now_ms + delay,
            failures,
        },
    );
}

/// A root callout's answer. False if `id` is not the refresh's fetch.
pub fn on_answer(k: &KeyCtx<'_>, h: &dyn Host, id: CalloutId, answer: &CalloutAnswer) -> bool {
    let before = match k.refresh.try_borrow().map(|s| *s) {
        Ok(Refresh::InFlight {
            id: mine, failures, ..
        }) if mine == id => failures,
        _ => return false,
    };
    set(k, Refresh::Idle);
    match install(k, h, answer) {
        Ok(()) => h.log(Level::Debug, "veil: data keys refreshed"),
        Err(e) => {
            h.log(Level::Warn, &format!("veil: key fetch failed: {e}"));
            failed(k, h, clock::wall_ms(h).unwrap_or(0), before);
        }
    }
    true
}

fn install(k: &KeyCtx<'_>, h: &dyn Host, answer: &CalloutAnswer) -> Result<(), String> {
    match answer.status {
        Some(200) => {}
        Some(s) => return Err(format!("keyservice answered status {s}")),
        None => return Err("keyservice call failed (no :status: reset or timeout)".into()),
    }
    let now = clock::wall_secs(h).unwrap_or(0);
    let mut current = parse_current(&answer.body).map_err(|e| e.to_string())?;
    current.fetched_at = Some(now);
    k.cache
        .try_borrow_mut()
        .map_err(|_| "key cache busy".to_string())?
        .install(&current)
        .map_err(|e| e.to_string())?;
    if let Some(shared) = with_fetched_at(&answer.body, now) {
        if let Err(e) = k.records.over(h).shared_set(SHARED_KEY, &shared, None) {
            h.log(
                Level::Warn,
                &format!("veil: could not publish keys to shared data ({e})"),
            );
        }
    }
    Metrics::add(h, k.metrics.key_fetch_ok, 1);
    Ok(())
}
