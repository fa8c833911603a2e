//! The native shell: drives the roles (`veil-roles`) from Envoy's dynamic-module hooks.
//!
//! Threads and state:
//! - [`Module`] is one filter config, shared by every thread. `config_new` (main thread)
//!   validates the JSON with the roles' `Worker::configure` (counters defined there, once)
//!   and starts the **ticker**, a module thread that every [`TICK`] commits a config-scheduler
//!   event (the main thread's worker ticks: key refresh, its callouts run on main) and an
//!   event to one parked stream of each worker that has any (that worker ticks on it).
//! - Each Envoy worker thread has its own roles [`Worker`] (thread-local, like a proxy-wasm
//!   VM per worker): key cache, on-demand fetches and their waiters, relay pair cache. What
//!   workers share (keys, on-demand kid claims, relay pairs and replay windows) is the
//!   process-wide shared data of [`crate::host::Shared`], with the same compare-and-swap
//!   protocols as proxy-wasm's shared data: still one keyservice request per kid.
//! - A worker also ticks on its own traffic (at most once per [`TICK`], on a request's
//!   headers). Callouts a tick dispatches from a stream are the worker's ("root") callouts:
//!   their answers go to `Worker::on_root_callout`.
//! - Streams whose parked work became ready on another stream's hook are woken through their
//!   own scheduler (registered when they park) and run it in their `scheduled` hook.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use veil_core::config::FilterConfig;
use veil_core::problem::{problem_json, ProblemKind, CONTENT_TYPE};
use veil_roles::host::{
    Action, CalloutAnswer as RoleAnswer, CalloutId, Host, Level as RoleLevel, StreamHost, StreamId,
    MAX_CALLOUT_ANSWER,
};
use veil_roles::metrics::Metrics;
use veil_roles::{Stream, Worker, TICK};
use zeroize::Zeroizing;

use crate::ffi::{
    log, BodyStatus, CalloutAnswer, ConfigHost, Dir, HeadersStatus, Http, Level, Scheduler,
    TrailersStatus,
};
use crate::host::{ConfigCtx, StreamCtx};

/// The filter_name this module answers to (`DynamicModuleFilter.filter_name`).
pub const FILTER_NAME: &str = "veil";

/// Scheduler events.
const EVENT_TICK: u64 = 1;
const EVENT_RUN_PARKED: u64 = 2;

/// Ids for modules (a worker's thread-local state is keyed by it) and streams.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A worker's parked streams and their schedulers (read by the ticker thread).
type ParkedMap = Arc<Mutex<HashMap<StreamId, Arc<Scheduler>>>>;

/// One filter config: validated at load time (a bad config is refused: Envoy rejects it).
pub struct Module {
    id: u64,
    config: FilterConfig,
    metrics: Metrics,
    /// Hooks that panicked and answered fail-closed (`veil.native.hook_failed`; stays 0).
    hook_failed: Option<u32>,
    /// Every worker's parked-stream registry (the ticker wakes one stream of each).
    parked: Arc<Mutex<Vec<ParkedMap>>>,
    ticker: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
}

thread_local! {
    /// The main thread's roles worker per module (key refresh and its callouts).
    static MAIN: RefCell<HashMap<u64, Rc<Worker>>> = RefCell::new(HashMap::new());
    /// This Envoy worker thread's roles worker per module.
    static WORKERS: RefCell<HashMap<u64, Rc<WorkerSlot>>> = RefCell::new(HashMap::new());
}

/// One Envoy worker thread's state for one module.
struct WorkerSlot {
    worker: Rc<Worker>,
    parked: ParkedMap,
    last_tick: Cell<Instant>,
}

impl Module {
    /// Validates the filter JSON (`filter_config`) with core's parser through the roles; the
    /// environment supplies `*_env` settings such as `keyservice.token_env`.
    pub fn new(host: &ConfigHost, name: &[u8], config: &[u8]) -> Result<Module, String> {
        if name != FILTER_NAME.as_bytes() {
            return Err(format!(
                "filter_name {:?}: this module serves only {FILTER_NAME:?}",
                String::from_utf8_lossy(name)
            ));
        }
        let ctx = ConfigCtx { host };
        let worker = Worker::configure(&ctx, config, &|k| std::env::var(k).ok())
            .map_err(|e| e.to_string())?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let module = Module {
            id,
            config: worker.config.clone(),
            metrics: worker.metrics,
            hook_failed: ctx.define_counter("veil.native.hook_failed").ok(),
            parked: Arc::new(Mutex::new(Vec::new())),
            ticker: Mutex::new(None),
        };
        log(Level::Info, || {
            format!(
                "veil: native filter configured ({} route rules, relay {})",
                worker.config.routes.len(),
                if worker.config.relay.is_some() {
                    "on"
                } else {
                    "off"
                }
            )
        });
        MAIN.with(|m| {
            if let Ok(mut m) = m.try_borrow_mut() {
                m.insert(id, Rc::new(worker));
            }
        });
        if let Some(sched) = host.scheduler() {
            module.start_ticker(sched);
        }
        Ok(module)
    }

    /// The ticker thread: every TICK, the main thread's tick (config scheduler) and one
    /// parked stream of each worker that has any. Stops when `shutdown` drops the sender.
    fn start_ticker(&self, config_sched: Arc<Scheduler>) {
        let (tx, rx) = mpsc::channel::<()>();
        let parked = Arc::clone(&self.parked);
        let spawned = std::thread::Builder::new()
            .name("veil-ticker".into())
            .spawn(move || loop {
                match rx.recv_timeout(TICK) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                config_sched.commit(EVENT_TICK);
                let Ok(workers) = parked.lock() else { return };
                for w in workers.iter() {
                    if let Ok(streams) = w.lock() {
                        if let Some(s) = streams.values().next() {
                            s.commit(EVENT_TICK);
                        }
                    }
                }
            });
        match spawned {
            Ok(handle) => {
                if let Ok(mut t) = self.ticker.lock() {
                    *t = Some((tx, handle));
                }
            }
            Err(e) => log(Level::Error, || {
                format!("veil: cannot start the ticker thread ({e}); keys refresh on traffic only")
            }),
        }
    }

    /// This worker thread's state (made on its first stream).
    fn slot(&self) -> Rc<WorkerSlot> {
        WORKERS.with(|w| {
            let mut w = match w.try_borrow_mut() {
                Ok(w) => w,
                // Re-entrancy cannot happen (hooks do not nest); a fresh slot is still sound.
                Err(_) => return Rc::new(self.make_slot()),
            };
            Rc::clone(
                w.entry(self.id)
                    .or_insert_with(|| Rc::new(self.make_slot())),
            )
        })
    }

    fn make_slot(&self) -> WorkerSlot {
        let parked: ParkedMap = Arc::new(Mutex::new(HashMap::new()));
        if let Ok(mut all) = self.parked.lock() {
            all.push(Arc::clone(&parked));
        }
        let worker = Worker::new(self.config.clone(), self.metrics);
        // Start from the keys the main thread (or another worker) already holds.
        if let Ok(mut keys) = worker.keys.try_borrow_mut() {
            let _ = keys.refresh_from_shared(&crate::host::Shared);
        }
        // The first stream ticks at once.
        let now = Instant::now();
        WorkerSlot {
            worker: Rc::new(worker),
            parked,
            last_tick: Cell::new(now.checked_sub(TICK).unwrap_or(now)),
        }
    }

    pub fn new_exchange(&self) -> Exchange {
        let slot = self.slot();
        let id = StreamId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let buffer_limit = self
            .config
            .max_body_bytes
            .max(self.config.max_sealed_body_bytes)
            .saturating_mul(2)
            .saturating_add(64 * 1024);
        Exchange {
            stream: Stream::new(Rc::clone(&slot.worker), id),
            slot,
            id,
            root_callouts: Vec::new(),
            hook_failed: self.hook_failed,
            buffer_limit: u64::try_from(buffer_limit).unwrap_or(u64::MAX),
            ended: false,
            parked: false,
        }
    }

    /// The main thread's tick (config scheduler).
    pub fn on_scheduled(&self, host: &ConfigHost, event: u64) {
        if event != EVENT_TICK {
            return;
        }
        if let Some(w) = self.main_worker() {
            // The main thread has no streams: nothing parks there.
            let _ = w.tick(&ConfigCtx { host });
        }
    }

    /// The answer to a callout the main thread's tick dispatched.
    pub fn on_callout(&self, host: &ConfigHost, id: u64, answer: CalloutAnswer) {
        if let Some(w) = self.main_worker() {
            let _ = w.on_root_callout(&ConfigCtx { host }, CalloutId(id), &role_answer(answer));
        }
    }

    fn main_worker(&self) -> Option<Rc<Worker>> {
        MAIN.with(|m| m.try_borrow().ok()?.get(&self.id).cloned())
    }

    /// Main thread, before the config is freed: stop and join the ticker (so nothing commits
    /// to the config scheduler after it is deleted), drop the main worker.
    pub fn shutdown(&self) {
        let ticker = self.ticker.lock().ok().and_then(|mut t| t.take());
        if let Some((tx, handle)) = ticker {
            drop(tx);
            let _ = handle.join();
        }
        MAIN.with(|m| {
            if let Ok(mut m) = m.try_borrow_mut() {
                m.remove(&self.id);
            }
        });
    }
}

/// The roles' view of a callout's answer (status None unless Envoy answered one; the body
/// capped at what the roles read).
fn role_answer(a: CalloutAnswer) -> RoleAnswer {
    match a {
        CalloutAnswer::Response { status, body, .. } => {
            let mut body = Zeroizing::new(body);
            body.truncate(MAX_CALLOUT_ANSWER);
            RoleAnswer {
                status: (status != 0).then_some(status),
                body,
            }
        }
        CalloutAnswer::Failed(_) => RoleAnswer {
            status: None,
            body: Zeroizing::new(Vec::new()),
        },
    }
}

fn headers_status(a: Action) -> HeadersStatus {
    match a {
        Action::Continue => HeadersStatus::Continue,
        Action::Pause => HeadersStatus::Stop,
    }
}

fn body_status(a: Action) -> BodyStatus {
    match a {
        Action::Continue => BodyStatus::Continue,
        Action::Pause => BodyStatus::StopAndBuffer,
    }
}

fn trailers_status(a: Action) -> TrailersStatus {
    match a {
        Action::Continue => TrailersStatus::Continue,
        Action::Pause => TrailersStatus::Stop,
    }
}

/// One stream.
pub struct Exchange {
    stream: Stream,
    slot: Rc<WorkerSlot>,
    id: StreamId,
    /// Callouts this stream dispatched for its worker's tick.
    root_callouts: Vec<u64>,
    hook_failed: Option<u32>,
    buffer_limit: u64,
    ended: bool,
    /// In the worker's parked registry (so the ticker and other streams can wake it).
    parked: bool,
}

impl Exchange {
    /// Runs one role callback, then registers the stream for waking if it parked work.
    fn run<T>(&mut self, http: &Http, f: impl FnOnce(&mut Stream, &StreamCtx) -> T) -> T {
        let ctx = StreamCtx::new(http);
        let before = self.waiting();
        let out = f(&mut self.stream, &ctx);
        if self.waiting() > before {
            self.park(http);
        }
        out
    }

    fn waiting(&self) -> usize {
        self.slot
            .worker
            .ondemand
            .try_borrow()
            .map(|o| o.waiting())
            .unwrap_or(0)
    }

    fn park(&mut self, http: &Http) {
        if let (Some(s), Ok(mut p)) = (http.scheduler(), self.slot.parked.lock()) {
            p.insert(self.id, s);
            self.parked = true;
        }
    }

    /// Takes this stream out of the parked registry (a lock, only if it was put there).
    fn unpark(&mut self) {
        if !self.parked {
            return;
        }
        if let Ok(mut p) = self.slot.parked.lock() {
            p.remove(&self.id);
            self.parked = false;
        }
    }

    /// Runs the parked work of `ready`: this stream's here, other streams' on their own
    /// hooks (their schedulers).
    fn dispatch(&mut self, http: &Http, ready: Vec<StreamId>) {
        for sid in ready {
            if sid == self.id {
                self.unpark();
                self.slot.worker.run_parked(&StreamCtx::new(http), sid);
                continue;
            }
            let sched = self
                .slot
                .parked
                .lock()
                .ok()
                .and_then(|p| p.get(&sid).cloned());
            if let Some(s) = sched {
                s.commit(EVENT_RUN_PARKED);
            }
        }
    }

    /// The worker's tick, run on this stream; its callouts are the worker's.
    fn tick(&mut self, http: &Http) {
        self.slot.last_tick.set(Instant::now());
        let ctx = StreamCtx::new(http);
        let ready = self.slot.worker.tick(&ctx);
        self.root_callouts.extend(ctx.issued.take());
        self.dispatch(http, ready);
    }

    pub fn on_request_headers(&mut self, http: &Http, eos: bool) -> HeadersStatus {
        // Envoy's own per-stream limit (1 MiB by default) must not answer before the roles'
        // max_body_bytes / max_sealed_body_bytes do.
        if http.buffer_limit() < self.buffer_limit {
            http.set_buffer_limit(self.buffer_limit);
        }
        if self.slot.last_tick.get().elapsed() >= TICK {
            self.tick(http);
        }
        headers_status(self.run(http, |s, h| s.on_request_headers(h, eos)))
    }

    pub fn on_request_body(&mut self, http: &Http, eos: bool) -> BodyStatus {
        let size = http.body_size(Dir::Request);
        body_status(self.run(http, |s, h| s.on_request_body(h, size, eos)))
    }

    pub fn on_request_trailers(&mut self, http: &Http) -> TrailersStatus {
        trailers_status(self.run(http, |s, h| s.on_request_trailers(h)))
    }

    pub fn on_response_headers(&mut self, http: &Http, eos: bool) -> HeadersStatus {
        headers_status(self.run(http, |s, h| s.on_response_headers(h, eos)))
    }

    pub fn on_response_body(&mut self, http: &Http, eos: bool) -> BodyStatus {
        let size = http.body_size(Dir::Response);
        body_status(self.run(http, |s, h| s.on_response_body(h, size, eos)))
    }

    pub fn on_response_trailers(&mut self, http: &Http) -> TrailersStatus {
        trailers_status(self.run(http, |s, h| s.on_response_trailers(h)))
    }

    /// The last hook with the stream's Envoy side: parked work is dropped, fetches this
    /// stream owned are handed to the tick.
    pub fn on_complete(&mut self, http: &Http) {
        self.end(&StreamCtx::new(http));
    }

    fn end(&mut self, h: &dyn Host) {
        if !self.ended {
            self.ended = true;
            self.unpark();
            self.stream.on_destroy(h);
        }
    }

    pub fn on_callout(&mut self, http: &Http, id: u64, answer: CalloutAnswer) {
        let answer = role_answer(answer);
        let ready = if let Some(i) = self.root_callouts.iter().position(|c| *c == id) {
            self.root_callouts.swap_remove(i);
            self.slot
                .worker
                .on_root_callout(&StreamCtx::new(http), CalloutId(id), &answer)
        } else {
            let ctx = StreamCtx::new(http);
            let before = self.waiting();
            let ready = self.stream.on_callout(&ctx, CalloutId(id), &answer);
            if self.waiting() > before {
                self.park(http);
            }
            ready
        };
        self.dispatch(http, ready);
    }

    pub fn on_scheduled(&mut self, http: &Http, event: u64) {
        match event {
            EVENT_TICK => self.tick(http),
            EVENT_RUN_PARKED => {
                self.unpark();
                self.slot.worker.run_parked(&StreamCtx::new(http), self.id);
            }
            _ => {}
        }
    }

    /// After a hook panicked: 500 problem+json (Envoy resets the stream instead if the
    /// response already started). Nothing of the stream is forwarded any more.
    pub fn fail_closed(&mut self, http: &Http) {
        self.unpark();
        let ctx = StreamCtx::new(http);
        Metrics::add(&ctx, self.hook_failed, 1);
        refuse(
            &ctx,
            ProblemKind::SealFailed,
            "the filter failed on this request",
        );
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // Envoy always calls stream_complete first; if it did not, the parked entry (and its
        // scheduler, deleted by the destroy hook right after) must not stay reachable.
        self.unpark();
    }
}

/// Answers a problem+json; the hook then returns a Stop status. Logs the code, never content.
fn refuse(h: &dyn StreamHost, kind: ProblemKind, detail: &str) {
    h.log(
        RoleLevel::Info,
        &format!("veil: refused: {} ({detail})", kind.code()),
    );
    let body = problem_json(kind, detail);
    let headers = [
        ("content-type", CONTENT_TYPE),
        ("cache-control", "no-store"),
    ];
    if h.send_local_response(kind.status(), &headers, &body)
        .is_err()
    {
        h.log(RoleLevel::Error, "veil: could not send the refusal");
    }
}
