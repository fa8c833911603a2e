//! Keys fetched on demand: kids a response (or a search rewrite) needs that the worker does
//! not hold — earlier epochs, earlier root versions — are fetched from the keyservice
//! (`GET /v1/data-keys/{kid}`) while the stream waits, and concurrent streams that need the
//! same kid share ONE callout, across all workers.
//!
//! # Waiting and resuming
//!
//! - A stream that needs kids parks its remaining work (a [`Job`]) in this worker's waiter
//!   table under its [`StreamId`] and returns `Pause`.
//! - For each kid nobody fetches yet, it claims the kid in the shared record
//!   ([`SHARED_ONDEMAND`], a CAS write: exactly one worker wins) and dispatches the callout
//!   from its own stream.
//! - When the answer arrives, the key is installed and published in the shared record (or
//!   the kid remembered as unknown), the claim is released, and the ids of every waiter of
//!   this worker whose kids are now all resolved go back to the shell, which runs each
//!   parked job on its own stream (`Worker::run_parked`) and resumes it.
//! - Waiters on *other* workers, which found the kid claimed, are found ready by their own
//!   worker's tick once the answer is in shared data. The tick also takes over a fetch whose
//!   stream went away (Envoy cancels a destroyed stream's callouts) or whose claim expired,
//!   dispatching it from the root ([`Owner::Root`]), and releases waiters that waited longer
//!   than two callout timeouts (their kids count as unavailable).
//!
//! Unknown kids (keyservice 404 or 400) are remembered for the route's
//! `unknown_kid_cache_secs`, per worker and in the shared record; a failed fetch (timeout,
//! 5xx, keyservice unreachable) for one second.

use std::collections::HashMap;

use veil_core::crypto::keys::Kid;
use veil_core::keyservice_answer::parse_key;
use veil_core::ondemand_record::{Mark, OnDemandRecord, SHARED_ONDEMAND};

use crate::host::{CalloutAnswer, CalloutId, Host, Level, SharedData, StreamId};
use crate::keys::KeyCtx;
use crate::keyservice;
use crate::metrics::Metrics;
use crate::parked::Job;

/// How long a failed fetch (not a 404) keeps a kid unavailable.
const FAILED_MS: i64 = 1_000;
/// CAS attempts on the shared record before giving up on it (and fetching anyway).
const CAS_TRIES: usize = 8;

/// Who dispatched a callout, and so gets its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The shell's root (proxy-wasm root context; native config context).
    Root,
    Stream(StreamId),
}

/// A parked stream: the kids it waits for and what it still has to do.
pub struct Waiter {
    pub kids: Vec<Kid>,
    pub since_ms: i64,
    pub job: Job,
}

/// A callout this worker dispatched.
struct Fetch {
    kid: Kid,
    id: CalloutId,
    owner: Owner,
    started_ms: i64,
    unknown_ttl_ms: i64,
}

/// This worker's fetches, the kids others fetch, recent failures and the parked streams.
#[derive(Default)]
pub struct OnDemand {
    fetches: Vec<Fetch>,
    /// Kids another worker claimed (with the unknown-TTL to use if we take over); the tick
    /// polls shared data for them.
    remote: Vec<(Kid, i64)>,
    /// Kids whose fetch failed, until unix ms.
    failed: HashMap<Kid, i64>,
    /// Parked work by stream.
    waiters: Vec<(StreamId, Waiter)>,
}

impl OnDemand {
    /// Streams parked here.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Fetches in flight from this worker.
    pub fn in_flight(&self) -> usize {
        self.fetches.len()
    }
}

fn is_ready(k: &KeyCtx<'_>, failed: &HashMap<Kid, i64>, kid: Kid, now_ms: i64) -> bool {
    let resolved = k
        .cache
        .try_borrow()
        .map(|c| c.holds(kid) || c.is_unknown(kid, now_ms))
        .unwrap_or(false);
    resolved || failed.get(&kid).is_some_and(|until| *until > now_ms)
}

/// The kids of `kids` that are neither held, known to be unknown, nor recently failed.
pub fn missing(k: &KeyCtx<'_>, kids: &[Kid], now_ms: i64) -> Vec<Kid> {
    let Ok(od) = k.ondemand.try_borrow() else {
        return Vec::new();
    };
    kids.iter()
        .copied()
        .filter(|kid| !is_ready(k, &od.failed, *kid, now_ms))
        .collect()
}

/// Takes keys and unknown marks from a shared record into this worker.
fn adopt(k: &KeyCtx<'_>, h: &dyn Host, rec: &OnDemandRecord, now_ms: i64) {
    let Ok(mut keys) = k.cache.try_borrow_mut() else {
        return;
    };
    for e in &rec.keys {
        if let Ok(kid) = e.kid.parse::<Kid>() {
            if !keys.holds(kid) && keys.add_key(kid, e).is_ok() {
                Metrics::add(h, k.metrics.kid_from_shared, 1);
            }
        }
    }
    for m in &rec.unknown {
        if let Ok(kid) = m.kid.parse::<Kid>() {
            if m.until > now_ms && !keys.holds(kid) {
                keys.add_unknown(kid, m.until, now_ms);
            }
        }
    }
}

fn read_shared(h: &dyn SharedData) -> Result<(OnDemandRecord, Option<u32>), String> {
    match h.shared_get(SHARED_ONDEMAND) {
        Ok(Some((bytes, cas))) => {
            let bytes = zeroize::Zeroizing::new(bytes);
            let rec = OnDemandRecord::parse(&bytes).map_err(|e| e.to_string())?;
            Ok((rec, Some(cas)))
        }
        Ok(None) => Ok((OnDemandRecord::default(), None)),
        Err(e) => Err(format!("reading shared data failed with {e}")),
    }
}

/// Read-modify-write of the shared record under CAS. `f` returns false to write nothing.
fn update_shared(
    h: &dyn SharedData,
    now_ms: i64,
    mut f: impl FnMut(&mut OnDemandRecord) -> bool,
) -> bool {
    for _ in 0..CAS_TRIES {
        let Ok((mut rec, cas)) = read_shared(h) else {
            return false;
        };
        if !f(&mut rec) {
            return true;
        }
        rec.prune(now_ms);
        let bytes = zeroize::Zeroizing::new(rec.to_vec());
        if h.shared_set(SHARED_ONDEMAND, &bytes, cas).is_ok() {
            return true;
        }
    }
    false
}

/// Creates the shared record if no worker did yet (so that claims are always CAS writes).
pub fn init_shared(h: &dyn SharedData) {
    if let Ok(None) = h.shared_get(SHARED_ONDEMAND) {
        let _ = h.shared_set(SHARED_ONDEMAND, &OnDemandRecord::default().to_vec(), None);
    }
}

enum Claim {
    /// The shared record already has the key or an unknown mark (now adopted).
    Resolved,
    /// Another worker is fetching it.
    Taken,
    /// This worker won the claim: fetch it.
    Won,
}

fn claim(k: &KeyCtx<'_>, h: &dyn Host, kid: Kid, now_ms: i64) -> Claim {
    let text = kid.to_string();
    let hold_ms = i64::try_from(k.config.keyservice.timeout_ms).unwrap_or(2000) + 1000;
    let mut outcome = Claim::Won;
    let written = update_shared(&k.records.over(h), now_ms, |rec| {
        if rec.resolves(&text, now_ms) {
            adopt(k, h, rec, now_ms);
            outcome = Claim::Resolved;
            return false;
        }
        if rec.claim_of(&text, now_ms).is_some() {
            outcome = Claim::Taken;
            return false;
        }
        rec.claims.retain(|m| m.kid != text);
        rec.claims.push(Mark {
            kid: text.clone(),
            until: now_ms + hold_ms,
        });
        outcome = Claim::Won;
        true
    });
    if !written {
        // Shared data unusable: fetch anyway (at worst one more callout).
        return Claim::Won;
    }
    outcome
}

/// Claims and fetches `kid` as `owner` (through `h`) unless another worker does. Returns
/// true if the kid is still pending (fetch in flight here or elsewhere).
fn start(
    k: &KeyCtx<'_>,
    h: &dyn Host,
    owner: Owner,
    kid: Kid,
    unknown_ttl_ms: i64,
    now_ms: i64,
) -> bool {
    match claim(k, h, kid, now_ms) {
        Claim::Resolved => false,
        Claim::Taken => {
            if let Ok(mut od) = k.ondemand.try_borrow_mut() {
                if !od.remote.iter().any(|(r, _)| *r == kid) {
                    od.remote.push((kid, unknown_ttl_ms));
                }
            }
            true
        }
        Claim::Won => {
            let path = format!("/v1/data-keys/{kid}");
            match keyservice::send(h, &k.config.keyservice, "GET", &path, None) {
                Ok(id) => {
                    if let Ok(mut od) = k.ondemand.try_borrow_mut() {
                        od.remote.retain(|(r, _)| *r != kid);
                        od.fetches.push(Fetch {
                            kid,
                            id,
                            owner,
                            started_ms: now_ms,
                            unknown_ttl_ms,
                        });
                    }
                    true
                }
                Err(e) => {
                    h.log(Level::Warn, &format!("veil: key {kid}: {e}"));
                    Metrics::add(h, k.metrics.kid_fetch_failed, 1);
                    release(k, h, kid, now_ms, |_| {});
                    fail(k, kid, now_ms);
                    false
                }
            }
        }
    }
}

fn fail(k: &KeyCtx<'_>, kid: Kid, now_ms: i64) {
    if let Ok(mut od) = k.ondemand.try_borrow_mut() {
        od.failed.retain(|_, until| *until > now_ms);
        od.failed.insert(kid, now_ms + FAILED_MS);
        od.remote.retain(|(r, _)| *r != kid);
    }
}

/// Removes this worker's claim on `kid` from the shared record, applying `f` in the same
/// write.
fn release(k: &KeyCtx<'_>, h: &dyn Host, kid: Kid, now_ms: i64, f: impl Fn(&mut OnDemandRecord)) {
    let text = kid.to_string();
    update_shared(&k.records.over(h), now_ms, |rec| {
        rec.claims.retain(|m| m.kid != text);
        f(rec);
        true
    });
}

/// Makes sure every kid of `kids` is held, resolved, or being fetched, dispatching from
/// `stream` (through its host `h`) where needed. Returns the kids still pending (the stream
/// must wait).
pub fn request(
    k: &KeyCtx<'_>,
    h: &dyn Host,
    stream: StreamId,
    kids: &[Kid],
    unknown_ttl_ms: i64,
    now_ms: i64,
) -> Vec<Kid> {
    let mut pending = Vec::new();
    for kid in missing(k, kids, now_ms) {
        let in_flight = k.ondemand.try_borrow().is_ok_and(|od| {
            od.fetches.iter().any(|f| f.kid == kid) || od.remote.iter().any(|(r, _)| *r == kid)
        });
        if in_flight || start(k, h, Owner::Stream(stream), kid, unknown_ttl_ms, now_ms) {
            pending.push(kid);
        }
    }
    pending
}

/// Parks a stream's work until its kids are resolved.
pub fn park(k: &KeyCtx<'_>, h: &dyn Host, stream: StreamId, waiter: Waiter) {
    Metrics::add(h, k.metrics.kid_waits, 1);
    if let Ok(mut od) = k.ondemand.try_borrow_mut() {
        od.waiters.retain(|(s, _)| *s != stream);
        od.waiters.push((stream, waiter));
    }
}

/// Takes a stream's parked work out of the table (to run it).
pub fn take(k: &KeyCtx<'_>, stream: StreamId) -> Option<Job> {
    let mut od = k.ondemand.try_borrow_mut().ok()?;
    let i = od.waiters.iter().position(|(s, _)| *s == stream)?;
    Some(od.waiters.swap_remove(i).1.job)
}

/// A callout's answer, delivered to `owner`. `None` if (`owner`, `id`) is not an on-demand
/// fetch; else the streams now ready to run their parked work.
pub fn on_answer(
    k: &KeyCtx<'_>,
    h: &dyn Host,
    owner: Owner,
    id: CalloutId,
    answer: &CalloutAnswer,
    now_ms: i64,
) -> Option<Vec<StreamId>> {
    let fetch = {
        let mut od = k.ondemand.try_borrow_mut().ok()?;
        let i = od
            .fetches
            .iter()
            .position(|f| f.id == id && f.owner == owner)?;
        od.fetches.swap_remove(i)
    };
    let kid = fetch.kid;
    match answer.status {
        Some(200) => {
            let installed = parse_key(&answer.body)
                .map_err(|e| e.to_string())
                .and_then(|entry| {
                    k.cache
                        .try_borrow_mut()
                        .map_err(|_| "key cache busy".to_string())?
                        .add_key(kid, &entry)
                        .map_err(|e| e.to_string())?;
                    Ok(entry)
                });
            match installed {
                Ok(entry) => {
                    Metrics::add(h, k.metrics.kid_fetch_ok, 1);
                    h.log(Level::Debug, &format!("veil: fetched data key {kid}"));
                    release(k, h, kid, now_ms, |rec| {
                        rec.keys.retain(|e| e.kid != entry.kid);
                        rec.keys.push(entry.clone());
                        rec.unknown.retain(|m| m.kid != entry.kid);
                    });
                }
                Err(e) => {
                    Metrics::add(h, k.metrics.kid_fetch_failed, 1);
                    h.log(Level::Warn, &format!("veil: key {kid}: {e}"));
                    release(k, h, kid, now_ms, |_| {});
                    fail(k, kid, now_ms);
                }
            }
        }
        Some(404 | 400) => {
            Metrics::add(h, k.metrics.kid_fetch_unknown, 1);
            h.log(
                Level::Debug,
                &format!("veil: the keyservice does not know kid {kid}"),
            );
            let until = now_ms + fetch.unknown_ttl_ms;
            if let Ok(mut keys) = k.cache.try_borrow_mut() {
                keys.add_unknown(kid, until, now_ms);
            }
            let text = kid.to_string();
            release(k, h, kid, now_ms, |rec| {
                rec.unknown.retain(|m| m.kid != text);
                rec.unknown.push(Mark {
                    kid: text.clone(),
                    until,
                });
            });
        }
        other => {
            Metrics::add(h, k.metrics.kid_fetch_failed, 1);
            let status = other.map_or("nothing (reset or timeout)".to_string(), |s| s.to_string());
            h.log(
                Level::Warn,
                &format!("veil: key {kid}: keyservice answered {status}"),
            );
            release(k, h, kid, now_ms, |_| {});
            fail(k, kid, now_ms);
        }
    }
    Some(ready(k, now_ms))
}

/// The worker's tick (through the root's host): adopt what other workers fetched, take over
/// fetches nobody answers, release waiters that waited too long. Returns the streams ready
/// to run their parked work.
pub fn tick(k: &KeyCtx<'_>, h: &dyn Host, now_ms: i64) -> Vec<StreamId> {
    let timeout = i64::try_from(k.config.keyservice.timeout_ms).unwrap_or(2000);
    let (remote, lost) = match k.ondemand.try_borrow_mut() {
        Ok(mut od) => {
            if od.waiters.is_empty() && od.remote.is_empty() && od.fetches.is_empty() {
                return Vec::new();
            }
            // A fetch whose answer never came (its stream is gone and Envoy cancelled it).
            let (lost, kept): (Vec<Fetch>, Vec<Fetch>) = od
                .fetches
                .drain(..)
                .partition(|f| now_ms - f.started_ms > timeout + 2000);
            od.fetches = kept;
            (od.remote.clone(), lost)
        }
        Err(_) => return Vec::new(),
    };
    for f in lost {
        release(k, h, f.kid, now_ms, |_| {});
        fail(k, f.kid, now_ms);
    }
    if !remote.is_empty() {
        if let Ok((rec, _)) = read_shared(&k.records.over(h)) {
            adopt(k, h, &rec, now_ms);
        }
        for (kid, ttl) in remote {
            if missing(k, &[kid], now_ms).is_empty() {
                if let Ok(mut od) = k.ondemand.try_borrow_mut() {
                    od.remote.retain(|(r, _)| *r != kid);
                }
                continue;
            }
            // Still claimed elsewhere: keep waiting; unclaimed or expired: fetch it here.
            if !start(k, h, Owner::Root, kid, ttl, now_ms) {
                if let Ok(mut od) = k.ondemand.try_borrow_mut() {
                    od.remote.retain(|(r, _)| *r != kid);
                }
            }
        }
    }
    // Waiters that waited longer than two callouts: their kids count as unavailable.
    let overdue: Vec<Kid> = match k.ondemand.try_borrow() {
        Ok(od) => od
            .waiters
            .iter()
            .filter(|(_, w)| now_ms - w.since_ms > 2 * timeout + 2000)
            .flat_map(|(_, w)| w.kids.iter().copied())
            .collect(),
        Err(_) => Vec::new(),
    };
    for kid in overdue {
        if !missing(k, &[kid], now_ms).is_empty() {
            fail(k, kid, now_ms);
        }
    }
    ready(k, now_ms)
}

/// A stream went away: drop its parked work; fetches it owned are handed to the tick if
/// anyone still waits for them.
pub fn forget(k: &KeyCtx<'_>, h: &dyn Host, stream: StreamId, now_ms: i64) {
    let owner = Owner::Stream(stream);
    let orphaned: Vec<Fetch> = match k.ondemand.try_borrow_mut() {
        Ok(mut od) => {
            if od.waiters.is_empty() && od.fetches.is_empty() {
                return;
            }
            od.waiters.retain(|(s, _)| *s != stream);
            let (mine, others): (Vec<Fetch>, Vec<Fetch>) =
                od.fetches.drain(..).partition(|f| f.owner == owner);
            od.fetches = others;
            mine
        }
        Err(_) => return,
    };
    for f in orphaned {
        release(k, h, f.kid, now_ms, |_| {});
        if let Ok(mut od) = k.ondemand.try_borrow_mut() {
            let needed = od.waiters.iter().any(|(_, w)| w.kids.contains(&f.kid));
            if needed && !od.remote.iter().any(|(r, _)| *r == f.kid) {
                od.remote.push((f.kid, f.unknown_ttl_ms));
            }
        }
    }
}

/// The parked streams whose kids are all resolved (they stay parked until run).
fn ready(k: &KeyCtx<'_>, now_ms: i64) -> Vec<StreamId> {
    let Ok(od) = k.ondemand.try_borrow() else {
        return Vec::new();
    };
    od.waiters
        .iter()
        .filter(|(_, w)| {
            w.kids
                .iter()
                .all(|kid| is_ready(k, &od.failed, *kid, now_ms))
        })
        .map(|(s, _)| *s)
        .collect()
}
