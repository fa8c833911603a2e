//! The Redis session store (`REDIS_URL`): pairs shared by every keyservice using the same
//! Redis and prefix, so any Envoy behind any of them can serve any pair.
//!
//! Layout (`P` = `RELAY_REDIS_PREFIX`):
//! - `P pair:<pair_id>`: a hash `cid` (client id), `c2s`, `s2c` (the keys, each sealed under a
//!   key derived from the keyring's current root, see [`super::seal`]), `exp`
//!   (end of life, Unix seconds), `max` and `win` (the replay window: the highest accepted
//!   sequence number and a 128-bit ring, bit `seq mod width`). Its Redis TTL is the idle TTL
//!   (never past `exp`), restarted on every use, so Redis drops idle pairs by itself.
//! - `P index`: a sorted set of pair keys scored by last use (ms of the caller's clock, which
//!   has one-second resolution; ties go by key), which bounds the count: making pairs past
//!   `max_sessions` deletes the least recently used. Entries of pairs Redis has expired are
//!   pruned when pairs are made (and are not counted as evictions).
//!
//! Every operation is one Lua script (atomic in Redis: two keyservices cannot both accept
//! the same `seq`). Scripts are sent by hash and re-sent whole after `NOSCRIPT` (a restarted
//! Redis has an empty script cache). Not for Redis Cluster (the scripts touch keys they
//! compute).
//!
//! The connection is a [`ConnectionManager`]: created lazily (the keyservice starts even if
//! Redis is down; relay calls answer 503 until it is up) and re-established after a
//! connection error, so a restarted Redis is picked up without restarting the keyservice.
//! A restarted Redis without persistence has lost its pairs: lookups answer 404 and clients
//! re-pair.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use veil_core::relay::keys::PairKeys;
use zeroize::Zeroizing;

use super::store::{BoxFuture, Limits, NewSession, SeqOutcome, Session, SessionStore, StoreError};

/// Longest one store operation may take, reconnecting included.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Per connection attempt and per command.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);

/// `KEYS[1]` the index, `KEYS[2..]` the new pairs; `ARGV` now_ms, idle_ms, max_sessions,
/// then per pair: client id, c2s, s2c, exp, ttl_ms. Returns the number of live pairs evicted.
const INSERT: &str = r#"
local now = tonumber(ARGV[1])
local idle = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
-- Index entries not touched for longer than the idle TTL: their pairs have expired.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%d', now - idle))
for i = 2, #KEYS do
  local a = 4 + (i - 2) * 5
  redis.call('DEL', KEYS[i])
  redis.call('HSET', KEYS[i], 'cid', ARGV[a], 'c2s', ARGV[a + 1], 's2c', ARGV[a + 2],
    'exp', ARGV[a + 3], 'max', '0', 'win', '')
  redis.call('PEXPIRE', KEYS[i], ARGV[a + 4])
  redis.call('ZADD', KEYS[1], ARGV[1], KEYS[i])
end
local evicted = 0
local over = redis.call('ZCARD', KEYS[1]) - max
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[1], over)
  for j = 1, #old, 2 do
    evicted = evicted + redis.call('DEL', old[j])
  end
end
return evicted
"#;

/// Shared by GET and SEQ: is the pair live, and restart its idle TTL.
const TOUCH: &str = r#"
local function expired(exp_secs, now_secs)
  return tonumber(exp_secs) <= tonumber(now_secs)
end
local function touch(key, index, now_ms, idle_ms, exp_secs, now_secs)
  local left = (tonumber(exp_secs) - tonumber(now_secs)) * 1000
  redis.call('PEXPIRE', key, string.format('%d', math.min(tonumber(idle_ms), left)))
  redis.call('ZADD', index, 'XX', now_ms, key)
end
local function drop(key, index)
  redis.call('DEL', key)
  redis.call('ZREM', index, key)
end
"#;

/// `KEYS` pair, index; `ARGV` now_ms, idle_ms, now_secs. Returns cid, c2s, s2c, exp or nil.
const GET: &str = r#"
local v = redis.call('HMGET', KEYS[1], 'cid', 'c2s', 's2c', 'exp')
if not v[1] or not v[4] then return false end
if expired(v[4], ARGV[3]) then drop(KEYS[1], KEYS[2]) return false end
touch(KEYS[1], KEYS[2], ARGV[1], ARGV[2], v[4], ARGV[3])
return v
"#;

/// `KEYS` pair, index; `ARGV` now_ms, idle_ms, now_secs, seq, width. Returns 1 accepted,
/// 0 replay, -1 unknown.
const SEQ: &str = r#"
local v = redis.call('HMGET', KEYS[1], 'exp', 'max', 'win')
if not v[1] then return -1 end
if expired(v[1], ARGV[3]) then drop(KEYS[1], KEYS[2]) return -1 end
local seq = tonumber(ARGV[4])
local w = tonumber(ARGV[5])
local max = tonumber(v[2]) or 0
local win = v[3] or ''
local bytes = {}
for i = 1, 16 do bytes[i] = string.byte(win, i) or 0 end
local function pos(s)
  local k = s % w
  return math.floor(k / 8) + 1, bit.lshift(1, k % 8)
end
local function isset(s) local i, m = pos(s) return bit.band(bytes[i], m) ~= 0 end
local function set(s) local i, m = pos(s) bytes[i] = bit.bor(bytes[i], m) end
local function clear(s) local i, m = pos(s) bytes[i] = bit.band(bytes[i], bit.bnot(m)) end
if seq > max then
  if seq - max >= w then
    for i = 1, 16 do bytes[i] = 0 end
  else
    for s = max + 1, seq - 1 do clear(s) end
  end
  set(seq)
  max = seq
elseif seq + w > max then
  if isset(seq) then return 0 end
  set(seq)
else
  return 0
end
redis.call('HSET', KEYS[1], 'max', string.format('%d', max), 'win', string.char(unpack(bytes)))
touch(KEYS[1], KEYS[2], ARGV[1], ARGV[2], v[1], ARGV[3])
return 1
"#;

/// See the module docs.
pub struct RedisStore {
    sealer: std::sync::Arc<super::seal::StoreSealer>,
    limits: Limits,
    prefix: String,
    conn: ConnectionManager,
    insert: Script,
    get: Script,
    seq: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("limits", &self.limits)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Whether `e` says the connection broke (reset, broken pipe, closed, refused): the
/// [`ConnectionManager`] has then started a new connection, and the next command waits for
/// it.
fn connection_lost(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// Runs a store operation within [`OP_TIMEOUT`], once more after a connection error: a
/// Redis restart breaks the pooled connection, and without the retry the first call after
/// it would answer 503 although Redis is back. Retrying is safe: every operation is one
/// idempotent-or-refusing script (a `seq` script that did run before the connection broke
/// answers `replay` the second time: fail closed, never a double accept).
async fn bounded<T, F, Fut>(conn: &ConnectionManager, op: F) -> Result<T, StoreError>
where
    F: Fn(ConnectionManager) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    let run = async {
        match op(conn.clone()).await {
            Err(e) if connection_lost(&e) => {
                tracing::debug!("redis connection lost, retrying once on a new one");
                op(conn.clone()).await
            }
            other => other,
        }
    };
    match tokio::time::timeout(OP_TIMEOUT, run).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(unavailable(format!(
            "no answer within {} ms",
            OP_TIMEOUT.as_millis()
        ))),
    }
}

impl RedisStore {
    /// Sets up the connection manager (no connection yet: see the module docs). Must run
    /// inside the Tokio runtime. `url` has been validated by the configuration.
    pub fn new(
        url: &str,
        prefix: &str,
        limits: Limits,
        sealer: std::sync::Arc<super::seal::StoreSealer>,
        ca_pem: Option<&[u8]>,
    ) -> Result<RedisStore, StoreError> {
        // rediss://: TLS (rustls), the server checked against `ca_pem` or the system's roots
        let client = if url.starts_with("rediss://") {
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: ca_pem.map(<[u8]>::to_vec),
                },
            )
        } else {
            redis::Client::open(url)
        }
        .map_err(|_| unavailable("REDIS_URL does not parse"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(RedisStore {
            sealer,
            limits,
            prefix: prefix.to_string(),
            conn,
            insert: Script::new(INSERT),
            get: Script::new(&format!("{TOUCH}{GET}")),
            seq: Script::new(&format!("{TOUCH}{SEQ}")),
        })
    }

    /// The server's address as `host:port` (never the password), for the start-up log.
    pub fn describe(url: &str) -> String {
        match redis::Client::open(url) {
            Ok(c) => c.get_connection_info().addr().to_string(),
            Err(_) => "<unparsable>".to_string(),
        }
    }

    fn pair_key(&self, pair_id: &str) -> String {
        format!("{}pair:{pair_id}", self.prefix)
    }

    fn index_key(&self) -> String {
        format!("{}index", self.prefix)
    }

    fn idle_ms(&self) -> u64 {
        self.limits.idle_ttl_secs.saturating_mul(1000)
    }

    /// Redis TTL of a pair made or used at `now`: the idle TTL, never past its end of life.
    fn ttl_ms(&self, expires_at: i64, now: i64) -> u64 {
        let left = u64::try_from(expires_at.saturating_sub(now)).unwrap_or(0);
        left.saturating_mul(1000).min(self.idle_ms()).max(1)
    }

    /// Checks that Redis answers (for the start-up log).
    pub async fn ping(&self) -> Result<(), StoreError> {
        bounded(&self.conn, |mut c| async move {
            redis::cmd("PING").query_async::<String>(&mut c).await
        })
        .await
        .map(|_| ())
    }

    async fn insert_all(&self, sessions: &[NewSession], now: i64) -> Result<u64, StoreError> {
        if sessions.is_empty() {
            return Ok(0);
        }
        let mut inv = self.insert.prepare_invoke();
        inv.key(self.index_key());
        for s in sessions {
            inv.key(self.pair_key(&s.pair_id));
        }
        inv.arg(now.saturating_mul(1000))
            .arg(self.idle_ms())
            .arg(self.limits.max_sessions);
        for s in sessions {
            inv.arg(s.client_id.as_str())
                .arg(self.sealer.seal(&s.pair_id, "c2s", &s.keys.c2s)?)
                .arg(self.sealer.seal(&s.pair_id, "s2c", &s.keys.s2c)?)
                .arg(s.expires_at)
                .arg(self.ttl_ms(s.expires_at, now));
        }
        // The packed command holds the keys; redis-rs drops it after sending (not zeroized:
        // the same holds for the socket buffers of any client).
        let inv = &inv;
        bounded(&self.conn, |mut c| async move {
            inv.invoke_async::<u64>(&mut c).await
        })
        .await
    }

    async fn get_one(&self, pair_id: &str, now: i64) -> Result<Option<Session>, StoreError> {
        let mut inv = self.get.prepare_invoke();
        inv.key(self.pair_key(pair_id))
            .key(self.index_key())
            .arg(now.saturating_mul(1000))
            .arg(self.idle_ms())
            .arg(now);
        let inv = &inv;
        let v: Option<Vec<Zeroizing<Vec<u8>>>> = bounded(&self.conn, |mut c| async move {
            inv.invoke_async::<Option<Vec<Vec<u8>>>>(&mut c).await
        })
        .await?
        .map(|v| v.into_iter().map(Zeroizing::new).collect());
        let Some(v) = v else { return Ok(None) };
        let [cid, c2s, s2c, exp] = v.as_slice() else {
            return Err(unavailable("unexpected answer to the lookup script"));
        };
        let (Some(c2s), Some(s2c)) = (
            self.sealer.open(pair_id, "c2s", c2s)?,
            self.sealer.open(pair_id, "s2c", s2c)?,
        ) else {
            // sealed under a root this process does not hold: unknown, the client re-pairs
            return Ok(None);
        };
        let parsed = (
            String::from_utf8(cid.to_vec()).ok(),
            Some(*c2s),
            Some(*s2c),
            std::str::from_utf8(exp)
                .ok()
                .and_then(|e| e.parse::<i64>().ok()),
        );
        match parsed {
            (Some(client_id), Some(c2s), Some(s2c), Some(expires_at)) => Ok(Some(Session {
                client_id,
                keys: PairKeys { c2s, s2c },
                expires_at,
            })),
            _ => Err(unavailable(format!(
                "pair {pair_id}: malformed hash (written by another version?)"
            ))),
        }
    }

    async fn seq_one(&self, pair_id: &str, seq: u64, now: i64) -> Result<SeqOutcome, StoreError> {
        let mut inv = self.seq.prepare_invoke();
        inv.key(self.pair_key(pair_id))
            .key(self.index_key())
            .arg(now.saturating_mul(1000))
            .arg(self.idle_ms())
            .arg(now)
            .arg(seq)
            .arg(self.limits.window);
        let inv = &inv;
        let outcome = bounded(&self.conn, |mut c| async move {
            inv.invoke_async::<i64>(&mut c).await
        })
        .await?;
        match outcome {
            1 => Ok(SeqOutcome::Accepted),
            0 => Ok(SeqOutcome::Replay),
            _ => Ok(SeqOutcome::Unknown),
        }
    }

    async fn count_live(&self, now: i64) -> Result<u64, StoreError> {
        let min = now
            .saturating_mul(1000)
            .saturating_sub(i64::try_from(self.idle_ms()).unwrap_or(i64::MAX));
        let index = self.index_key();
        let index = index.as_str();
        bounded(&self.conn, |mut c| async move {
            redis::cmd("ZCOUNT")
                .arg(index)
                .arg(min)
                .arg("+inf")
                .query_async::<u64>(&mut c)
                .await
        })
        .await
    }
}

impl SessionStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn insert<'a>(
        &'a self,
        sessions: &'a [NewSession],
        now: i64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.insert_all(sessions, now))
    }

    fn get<'a>(
        &'a self,
        pair_id: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        Box::pin(self.get_one(pair_id, now))
    }

    fn accept_seq<'a>(
        &'a self,
        pair_id: &'a str,
        seq: u64,
        now: i64,
    ) -> BoxFuture<'a, Result<SeqOutcome, StoreError>> {
        Box::pin(self.seq_one(pair_id, seq, now))
    }

    fn count(&self, now: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.count_live(now))
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::tests::{check_window_cases, new_session};
    use super::super::testing::RedisServer;
    use super::*;

    /// A sealer over one fixed root, as a serving keyservice has after loading its keyring.
    fn test_sealer() -> std::sync::Arc<crate::relay::seal::StoreSealer> {
        let s = crate::relay::seal::StoreSealer::new();
        let mut m = std::collections::BTreeMap::new();
        m.insert(1, veil_core::crypto::keys::RootKey::from_bytes([9; 32]));
        s.set_roots(std::sync::Arc::new(crate::keyring::Roots::from_map(m)));
        std::sync::Arc::new(s)
    }

    const LIMITS: Limits = Limits {
        idle_ttl_secs: 100,
        max_lifetime_secs: 1000,
        max_sessions: 3,
        window: 128,
    };

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn now() -> i64 {
        crate::keyring::now_unix()
    }

    #[test]
    fn pairs_bound_and_restart() {
        let mut redis = RedisServer::start();
        let rt = rt();
        let _in_rt = rt.enter();
        let s = RedisStore::new(&redis.url(), "t:", LIMITS, test_sealer(), None).unwrap();
        rt.block_on(async {
            s.ping().await.unwrap();
            let t = now();
            let n = new_session("p0", "c0", 1, t + 1000);
            assert_eq!(s.insert(std::slice::from_ref(&n), t).await.unwrap(), 0);
            let got = s.get("p0", t).await.unwrap().unwrap();
            assert_eq!(got.client_id, "c0");
            assert_eq!(got.keys.c2s, n.keys.c2s);
            assert_eq!(got.keys.s2c, n.keys.s2c);
            assert_eq!(got.expires_at, t + 1000);
            assert!(s.get("nope", t).await.unwrap().is_none());
            assert_eq!(s.count(t).await.unwrap(), 1);

            // Past its end of life (by the caller's clock): gone, also from the index.
            assert!(s.get("p0", t + 1000).await.unwrap().is_none());
            assert_eq!(s.count(t).await.unwrap(), 0);

            // The bound: the least recently used goes, counted.
            let batch: Vec<_> = (0..3)
                .map(|i| new_session(&format!("q{i}"), "c", i, t + 1000))
                .collect();
            assert_eq!(s.insert(&batch, t).await.unwrap(), 0);
            assert!(s.get("q0", t + 1).await.unwrap().is_some());
            assert_eq!(
                s.insert(&[new_session("q3", "c", 3, t + 1000)], t + 2)
                    .await
                    .unwrap(),
                1
            );
            assert!(s.get("q1", t + 3).await.unwrap().is_none());
            for p in ["q0", "q2", "q3"] {
                assert!(s.get(p, t + 3).await.unwrap().is_some(), "{p}");
            }
            assert_eq!(s.count(t + 3).await.unwrap(), 3);
        });

        // Down: a bounded error, no hang.
        redis.stop();
        rt.block_on(async {
            let e = s.get("q0", now()).await.unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("session store unavailable: redis:"),
                "{e}"
            );
        });

        // Restarted empty: the same store reconnects by itself; the pairs are gone.
        redis.restart();
        rt.block_on(async {
            // The first op after the restart is answered (retried once on a new
            // connection), not an error.
            assert!(s.get("q0", now()).await.unwrap().is_none());
            let t = now();
            s.insert(&[new_session("r", "c", 7, t + 1000)], t)
                .await
                .unwrap();
            assert_eq!(s.accept_seq("r", 1, t).await.unwrap(), SeqOutcome::Accepted);
            assert_eq!(s.get("r", t).await.unwrap().unwrap().keys.c2s, [7; 32]);
        });

        // Restarted under a live connection, no op while it was down: the first op of each
        // kind finds the broken connection and still answers.
        for op in 0..4 {
            redis.restart();
            rt.block_on(async {
                let t = now();
                match op {
                    0 => assert!(s.get("r", t).await.unwrap().is_none()),
                    1 => assert_eq!(s.accept_seq("r", 2, t).await.unwrap(), SeqOutcome::Unknown),
                    2 => assert_eq!(s.count(t).await.unwrap(), 0),
                    _ => assert_eq!(
                        s.insert(&[new_session("z", "c", 9, t + 1000)], t)
                            .await
                            .unwrap(),
                        0
                    ),
                }
            });
        }
    }

    #[test]
    fn replay_window() {
        let redis = RedisServer::start();
        rt().block_on(async {
            for width in [128, 4] {
                let s = RedisStore::new(
                    &redis.url(),
                    &format!("w{width}:"),
                    Limits {
                        window: width,
                        ..LIMITS
                    },
                    test_sealer(),
                    None,
                )
                .unwrap();
                check_window_cases(&s, width).await;
            }
        });
    }

    #[test]
    fn one_seq_is_accepted_once_across_concurrent_callers() {
        let redis = RedisServer::start();
        rt().block_on(async {
            let a = std::sync::Arc::new(
                RedisStore::new(&redis.url(), "c:", LIMITS, test_sealer(), None).unwrap(),
            );
            let b = std::sync::Arc::new(
                RedisStore::new(&redis.url(), "c:", LIMITS, test_sealer(), None).unwrap(),
            );
            let t = now();
            a.insert(&[new_session("p", "c", 1, t + 1000)], t)
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for i in 0..40u64 {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                // Every seq 1..=20 sent twice, once through each store.
                tasks.push(tokio::spawn(async move {
                    s.accept_seq("p", i / 2 + 1, t).await.unwrap()
                }));
            }
            let mut accepted = 0;
            for task in tasks {
                if task.await.unwrap() == SeqOutcome::Accepted {
                    accepted += 1;
                }
            }
            assert_eq!(accepted, 20);
        });
    }

    #[test]
    fn idle_ttl_is_a_redis_ttl() {
        let redis = RedisServer::start();
        rt().block_on(async {
            let s = RedisStore::new(
                &redis.url(),
                "i:",
                Limits {
                    idle_ttl_secs: 1,
                    ..LIMITS
                },
                test_sealer(),
                None,
            )
            .unwrap();
            let t = now();
            s.insert(&[new_session("p", "c", 1, t + 1000)], t)
                .await
                .unwrap();
            let mut conn = s.conn.clone();
            let ttl: i64 = redis::cmd("PTTL")
                .arg("i:pair:p")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!((1..=1000).contains(&ttl), "{ttl}");
            // Near its end of life the TTL is what is left, not the idle TTL.
            let s2 = RedisStore::new(&redis.url(), "i:", LIMITS, test_sealer(), None).unwrap();
            s2.insert(&[new_session("q", "c", 1, t + 5)], t)
                .await
                .unwrap();
            let ttl: i64 = redis::cmd("PTTL")
                .arg("i:pair:q")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!((1..=5000).contains(&ttl), "{ttl}");
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert!(s.get("p", now()).await.unwrap().is_none());
        });
    }
}
