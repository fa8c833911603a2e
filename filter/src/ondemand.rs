//! Keys fetched on demand: kids a response (or a search rewrite) needs that the VM does not
//! hold — earlier epochs, earlier root versions — are fetched from the keyservice
//! (`GET /v1/data-keys/{kid}`) while the stream waits, and concurrent streams that need the
//! same kid share ONE callout, across all worker VMs.
//!
//! # Waiting and resuming
//!
//! A callout's answer is delivered to the context that dispatched it, and proxy-wasm's
//! `continue_stream` acts on the *effective* context. So:
//!
//! - A stream that needs kids parks its remaining work (a [`Job`]) in this VM's waiter table
//!   under its context id and returns `Pause`.
//! - For each kid nobody fetches yet, it claims the kid in the shared record
//!   ([`SHARED_ONDEMAND`], a CAS write: exactly one VM wins) and dispatches the callout from
//!   its own context.
//! - When the answer arrives, the key is installed in the VM and published in the shared
//!   record (or the kid remembered as unknown), the claim is released, and every waiter of
//!   this VM whose kids are now all resolved is run: `set_effective_context(waiter)` points
//!   the hostcalls (buffers, headers, local replies) at the waiter's stream, its job
//!   rewrites its body, and `continue_stream` resumes it. Envoy runs the continuation after
//!   the VM call returns, so nothing re-enters the VM.
//! - Waiters in *other* VMs, which found the kid claimed, are resumed by their own root
//!   context's `on_tick` (200 ms) once the answer is in shared data. The tick also takes
//!   over a fetch whose stream went away (Envoy cancels a destroyed context's callouts) or
//!   whose claim expired, dispatching it from the root context, and releases waiters that
//!   waited longer than two callout timeouts (their kids count as unavailable).
//!
//! Unknown kids (keyservice 404 or 400) are remembered for the route's
//! `unknown_kid_cache_secs`, per VM and in the shared record; a failed fetch (timeout, 5xx,
//! keyservice unreachable) for one second.

use std::collections::HashMap;
use std::time::Duration;

use proxy_wasm::types::{BufferType, LogLevel, MapType, StreamType};
use veil_core::keys::Kid;

use crate::host;
use crate::keycache::{KeyEntry, Mark, OnDemandRecord, SHARED_ONDEMAND};
use crate::metrics::Metrics;
use crate::unseal_stream::{self, Done, Job};
use crate::vm::VmState;

/// How long a failed fetch (not a 404) keeps a kid unavailable.
const FAILED_MS: i64 = 1_000;
/// CAS attempts on the shared record before giving up on it (and fetching anyway).
const CAS_TRIES: usize = 8;

/// A parked stream: the kids it waits for and what it still has to do.
pub struct Waiter {
    pub kids: Vec<Kid>,
    pub since_ms: i64,
    pub job: Job,
}

/// A callout this VM dispatched.
struct Fetch {
    kid: Kid,
    token: u32,
    /// The context that dispatched it (a stream, or the root).
    owner: u32,
    started_ms: i64,
    unknown_ttl_ms: i64,
}

#[derive(Default)]
pub struct OnDemand {
    fetches: Vec<Fetch>,
    /// Kids another VM claimed (with the unknown-TTL to use if we take over); the tick
    /// polls shared data for them.
    remote: Vec<(Kid, i64)>,
    /// Kids whose fetch failed, until unix ms.
    failed: HashMap<Kid, i64>,
    /// Context id → parked work.
    waiters: Vec<(u32, Waiter)>,
}

fn is_ready(vm: &VmState, failed: &HashMap<Kid, i64>, kid: Kid, now_ms: i64) -> bool {
    let resolved = vm
        .keys
        .try_borrow()
        .map(|k| k.holds(kid) || k.is_unknown(kid, now_ms))
        .unwrap_or(false);
    resolved || failed.get(&kid).is_some_and(|until| *until > now_ms)
}

/// The kids of `kids` that are neither held, known to be unknown, nor recently failed.
pub fn missing(vm: &VmState, kids: &[Kid], now_ms: i64) -> Vec<Kid> {
    let Ok(od) = vm.ondemand.try_borrow() else {
        return Vec::new();
    };
    kids.iter()
        .copied()
        .filter(|k| !is_ready(vm, &od.failed, *k, now_ms))
        .collect()
}

/// Takes keys and unknown marks from a shared record into this VM.
fn adopt(vm: &VmState, rec: &OnDemandRecord, now_ms: i64) {
    let Ok(mut keys) = vm.keys.try_borrow_mut() else {
        return;
    };
    for e in &rec.keys {
        if let Ok(kid) = e.kid.parse::<Kid>() {
            if !keys.holds(kid) && keys.add_key(kid, e).is_ok() {
                Metrics::add(vm.metrics.kid_from_shared, 1);
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

fn read_shared() -> Result<(OnDemandRecord, Option<u32>), String> {
    match host::get_shared(SHARED_ONDEMAND) {
        Ok(Some((bytes, cas))) => {
            let bytes = zeroize::Zeroizing::new(bytes);
            let rec = OnDemandRecord::parse(&bytes).map_err(|e| e.to_string())?;
            Ok((rec, Some(cas)))
        }
        Ok(None) => Ok((OnDemandRecord::default(), None)),
        Err(e) => Err(format!("get_shared_data status {}", e.0)),
    }
}

/// Read-modify-write of the shared record under CAS. `f` returns false to write nothing.
fn update_shared(now_ms: i64, mut f: impl FnMut(&mut OnDemandRecord) -> bool) -> bool {
    for _ in 0..CAS_TRIES {
        let Ok((mut rec, cas)) = read_shared() else {
            return false;
        };
        if !f(&mut rec) {
            return true;
        }
        rec.prune(now_ms);
        let bytes = zeroize::Zeroizing::new(rec.to_vec());
        if host::set_shared(SHARED_ONDEMAND, &bytes, cas).is_ok() {
            return true;
        }
    }
    false
}

/// Creates the shared record if no VM did yet (so that claims are always CAS writes).
pub fn init_shared() {
    if let Ok(None) = host::get_shared(SHARED_ONDEMAND) {
        let _ = host::set_shared(SHARED_ONDEMAND, &OnDemandRecord::default().to_vec(), None);
    }
}

enum Claim {
    /// The shared record already has the key or an unknown mark (now adopted).
    Resolved,
    /// Another VM is fetching it.
    Taken,
    /// This VM won the claim: fetch it.
    Won,
}

fn claim(vm: &VmState, kid: Kid, now_ms: i64) -> Claim {
    let text = kid.to_string();
    let hold_ms = i64::try_from(vm.config.keyservice.timeout_ms).unwrap_or(2000) + 1000;
    let mut outcome = Claim::Won;
    let written = update_shared(now_ms, |rec| {
        if rec.keys.iter().any(|e| e.kid == text)
            || rec
                .unknown
                .iter()
                .any(|m| m.kid == text && m.until > now_ms)
        {
            adopt(vm, rec, now_ms);
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

fn dispatch(vm: &VmState, kid: Kid) -> Result<u32, String> {
    let ks = &vm.config.keyservice;
    let path = format!("/v1/data-keys/{kid}");
    let auth = crate::callout_auth::authorization(ks, "GET", &path, b"")?;
    let headers = vec![
        (":method", "GET"),
        (":path", path.as_str()),
        (":authority", ks.authority.as_str()),
        ("authorization", auth.as_str()),
    ];
    proxy_wasm::hostcalls::dispatch_http_call(
        &ks.cluster,
        headers,
        None,
        vec![],
        Duration::from_millis(ks.timeout_ms),
    )
    .map_err(|s| format!("{s:?}"))
}

/// Claims and fetches `kid` from context `owner` unless another VM does. Returns true if
/// the kid is still pending (fetch in flight here or elsewhere).
fn start(vm: &VmState, owner: u32, kid: Kid, unknown_ttl_ms: i64, now_ms: i64) -> bool {
    match claim(vm, kid, now_ms) {
        Claim::Resolved => false,
        Claim::Taken => {
            if let Ok(mut od) = vm.ondemand.try_borrow_mut() {
                if !od.remote.iter().any(|(k, _)| *k == kid) {
                    od.remote.push((kid, unknown_ttl_ms));
                }
            }
            true
        }
        Claim::Won => match dispatch(vm, kid) {
            Ok(token) => {
                if let Ok(mut od) = vm.ondemand.try_borrow_mut() {
                    od.remote.retain(|(k, _)| *k != kid);
                    od.fetches.push(Fetch {
                        kid,
                        token,
                        owner,
                        started_ms: now_ms,
                        unknown_ttl_ms,
                    });
                }
                true
            }
            Err(e) => {
                host::log(
                    LogLevel::Warn,
                    &format!("veil: cannot call the keyservice for kid {kid}: {e}"),
                );
                Metrics::add(vm.metrics.kid_fetch_failed, 1);
                release(kid, now_ms, |_| {});
                fail(vm, kid, now_ms);
                false
            }
        },
    }
}

fn fail(vm: &VmState, kid: Kid, now_ms: i64) {
    if let Ok(mut od) = vm.ondemand.try_borrow_mut() {
        od.failed.retain(|_, until| *until > now_ms);
        od.failed.insert(kid, now_ms + FAILED_MS);
        od.remote.retain(|(k, _)| *k != kid);
    }
}

/// Removes this VM's claim on `kid` from the shared record, applying `f` in the same write.
fn release(kid: Kid, now_ms: i64, f: impl Fn(&mut OnDemandRecord)) {
    let text = kid.to_string();
    update_shared(now_ms, |rec| {
        rec.claims.retain(|m| m.kid != text);
        f(rec);
        true
    });
}

/// Makes sure every kid of `kids` is held, resolved, or being fetched, dispatching from
/// context `ctx` where needed. Returns the kids still pending (the stream must wait).
pub fn request(vm: &VmState, ctx: u32, kids: &[Kid], unknown_ttl_ms: i64, now_ms: i64) -> Vec<Kid> {
    let mut pending = Vec::new();
    for kid in missing(vm, kids, now_ms) {
        let in_flight = vm.ondemand.try_borrow().is_ok_and(|od| {
            od.fetches.iter().any(|f| f.kid == kid) || od.remote.iter().any(|(k, _)| *k == kid)
        });
        if in_flight || start(vm, ctx, kid, unknown_ttl_ms, now_ms) {
            pending.push(kid);
        }
    }
    pending
}

/// Parks a stream's work until its kids are resolved.
pub fn park(vm: &VmState, ctx: u32, waiter: Waiter) {
    Metrics::add(vm.metrics.kid_waits, 1);
    if let Ok(mut od) = vm.ondemand.try_borrow_mut() {
        od.waiters.retain(|(c, _)| *c != ctx);
        od.waiters.push((ctx, waiter));
    }
}

/// A callout's answer, in the context that dispatched it. Returns false if `token` is not
/// an on-demand fetch.
pub fn on_answer(vm: &VmState, token: u32, body_size: usize, ctx: u32, now_ms: i64) -> bool {
    let fetch = match vm.ondemand.try_borrow_mut() {
        Ok(mut od) => match od.fetches.iter().position(|f| f.token == token) {
            Some(i) => od.fetches.swap_remove(i),
            None => return false,
        },
        Err(_) => return false,
    };
    let kid = fetch.kid;
    let status = host::get_header(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten();
    match status.as_deref() {
        Some("200") => {
            let body = host::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .map(zeroize::Zeroizing::new)
                .map_err(|e| format!("reading the answer failed with host status {}", e.0));
            let installed = body.and_then(|b| {
                let entry: KeyEntry =
                    serde_json::from_slice(&b).map_err(|_| "answer is not a key".to_string())?;
                vm.keys
                    .try_borrow_mut()
                    .map_err(|_| "key cache busy".to_string())?
                    .add_key(kid, &entry)
                    .map_err(|e| e.to_string())?;
                Ok(entry)
            });
            match installed {
                Ok(entry) => {
                    Metrics::add(vm.metrics.kid_fetch_ok, 1);
                    host::log(LogLevel::Debug, &format!("veil: fetched data key {kid}"));
                    release(kid, now_ms, |rec| {
                        rec.keys.retain(|e| e.kid != entry.kid);
                        rec.keys.push(entry.clone());
                        rec.unknown.retain(|m| m.kid != entry.kid);
                    });
                }
                Err(e) => {
                    Metrics::add(vm.metrics.kid_fetch_failed, 1);
                    host::log(LogLevel::Warn, &format!("veil: key {kid}: {e}"));
                    release(kid, now_ms, |_| {});
                    fail(vm, kid, now_ms);
                }
            }
        }
        Some("404" | "400") => {
            Metrics::add(vm.metrics.kid_fetch_unknown, 1);
            host::log(
                LogLevel::Debug,
                &format!("veil: the keyservice does not know kid {kid}"),
            );
            let until = now_ms + fetch.unknown_ttl_ms;
            if let Ok(mut keys) = vm.keys.try_borrow_mut() {
                keys.add_unknown(kid, until, now_ms);
            }
            let text = kid.to_string();
            release(kid, now_ms, |rec| {
                rec.unknown.retain(|m| m.kid != text);
                rec.unknown.push(Mark {
                    kid: text.clone(),
                    until,
                });
            });
        }
        other => {
            Metrics::add(vm.metrics.kid_fetch_failed, 1);
            host::log(
                LogLevel::Warn,
                &format!(
                    "veil: key {kid}: keyservice answered {}",
                    other.unwrap_or("nothing (reset or timeout)")
                ),
            );
            release(kid, now_ms, |_| {});
            fail(vm, kid, now_ms);
        }
    }
    resume_ready(vm, ctx, now_ms);
    true
}

/// The root's tick: adopt what other VMs fetched, take over fetches nobody answers, release
/// waiters that waited too long, resume whoever is ready.
pub fn tick(vm: &VmState, root_ctx: u32, now_ms: i64) {
    let timeout = i64::try_from(vm.config.keyservice.timeout_ms).unwrap_or(2000);
    let (remote, lost) = match vm.ondemand.try_borrow_mut() {
        Ok(mut od) => {
            if od.waiters.is_empty() && od.remote.is_empty() && od.fetches.is_empty() {
                return;
            }
            // A fetch whose answer never came (its context is gone and Envoy cancelled it).
            let (lost, kept): (Vec<Fetch>, Vec<Fetch>) = od
                .fetches
                .drain(..)
                .partition(|f| now_ms - f.started_ms > timeout + 2000);
            od.fetches = kept;
            (od.remote.clone(), lost)
        }
        Err(_) => return,
    };
    for f in lost {
        release(f.kid, now_ms, |_| {});
        fail(vm, f.kid, now_ms);
    }
    if !remote.is_empty() {
        if let Ok((rec, _)) = read_shared() {
            adopt(vm, &rec, now_ms);
        }
        for (kid, ttl) in remote {
            if missing(vm, &[kid], now_ms).is_empty() {
                if let Ok(mut od) = vm.ondemand.try_borrow_mut() {
                    od.remote.retain(|(k, _)| *k != kid);
                }
                continue;
            }
            // Still claimed elsewhere: keep waiting; unclaimed or expired: fetch it here.
            if !start(vm, root_ctx, kid, ttl, now_ms) {
                if let Ok(mut od) = vm.ondemand.try_borrow_mut() {
                    od.remote.retain(|(k, _)| *k != kid);
                }
            }
        }
    }
    // Waiters that waited longer than two callouts: their kids count as unavailable.
    let overdue: Vec<Kid> = match vm.ondemand.try_borrow() {
        Ok(od) => od
            .waiters
            .iter()
            .filter(|(_, w)| now_ms - w.since_ms > 2 * timeout + 2000)
            .flat_map(|(_, w)| w.kids.iter().copied())
            .collect(),
        Err(_) => Vec::new(),
    };
    for kid in overdue {
        if !missing(vm, &[kid], now_ms).is_empty() {
            fail(vm, kid, now_ms);
        }
    }
    resume_ready(vm, root_ctx, now_ms);
}

/// A stream went away: drop its parked work; fetches it owned are handed to the root's
/// tick if anyone still waits for them.
pub fn forget(vm: &VmState, ctx: u32) {
    let orphaned: Vec<Fetch> = match vm.ondemand.try_borrow_mut() {
        Ok(mut od) => {
            if od.waiters.is_empty() && od.fetches.is_empty() {
                return;
            }
            od.waiters.retain(|(c, _)| *c != ctx);
            let (mine, others): (Vec<Fetch>, Vec<Fetch>) =
                od.fetches.drain(..).partition(|f| f.owner == ctx);
            od.fetches = others;
            mine
        }
        Err(_) => return,
    };
    if orphaned.is_empty() {
        return;
    }
    let now_ms = crate::now_ms().unwrap_or(0);
    for f in orphaned {
        release(f.kid, now_ms, |_| {});
        if let Ok(mut od) = vm.ondemand.try_borrow_mut() {
            let needed = od.waiters.iter().any(|(_, w)| w.kids.contains(&f.kid));
            if needed && !od.remote.iter().any(|(k, _)| *k == f.kid) {
                od.remote.push((f.kid, f.unknown_ttl_ms));
            }
        }
    }
}

/// Runs every parked job whose kids are all resolved, each in its own stream's context.
fn resume_ready(vm: &VmState, current: u32, now_ms: i64) {
    let ready: Vec<(u32, Waiter)> = match vm.ondemand.try_borrow_mut() {
        Ok(mut od) => {
            let failed = od.failed.clone();
            let (ready, waiting): (Vec<_>, Vec<_>) = od
                .waiters
                .drain(..)
                .partition(|(_, w)| w.kids.iter().all(|k| is_ready(vm, &failed, *k, now_ms)));
            od.waiters = waiting;
            ready
        }
        Err(_) => return,
    };
    let mut switched = false;
    for (ctx, waiter) in ready {
        if ctx != current {
            if let Err(e) = host::set_effective_context(ctx) {
                // The stream is gone; nothing to resume.
                host::log(
                    LogLevel::Debug,
                    &format!("veil: waiting stream {ctx} is gone (host status {})", e.0),
                );
                continue;
            }
            switched = true;
        }
        let stream = match waiter.job {
            Job::Search(_) => StreamType::HttpRequest,
            Job::Unseal(_) => StreamType::HttpResponse,
        };
        if let Done::Continue = unseal_stream::complete(vm, waiter.job) {
            if let Err(e) = host::continue_stream(stream) {
                Metrics::add(vm.metrics.hostcall_failed, 1);
                host::log(
                    LogLevel::Warn,
                    &format!("veil: cannot resume stream {ctx} (host status {})", e.0),
                );
            }
        }
    }
    if switched {
        let _ = host::set_effective_context(current);
    }
}
