//! The cluster's run log in Redis, shared by every front. Each run's events are a stream
//! whose entry ids are `{sequence + 1}-0`, so `XRANGE` reads after a sequence and one
//! `XREAD BLOCK` follows many runs at once; the fenced append, the create and the lease
//! claim are Lua scripts, atomic in Redis.
//!
//! | key | type | value |
//! |---|---|---|
//! | `sn:v1:run:{id}:events` | stream | one entry per event, field `e`: [`RunEvent`] (JSON) |
//! | `sn:v1:run:{id}:meta` | string | [`RunMeta`] (JSON) |
//! | `sn:v1:run:{id}:lease` | string | [`Lease`] (JSON) |
//! | `sn:v1:run:{id}:cancel` | string | the cancel's reason |
//! | `sn:v1:runs:idem:{account}:{key}` | string | run id (a workflow's key is `workflow:{key}`) |
//! | `sn:v1:runs:list:{account}:{kind}` | sorted set | the account's runs of a kind, scored by creation (ms) |
//! | `sn:v1:runs:active` | sorted set | runs that need an executor, scored by lease end (ms) |
//! | `sn:v1:runs:ended` | sorted set | ended runs, scored by when (ms) |

use std::sync::Mutex;
use std::time::Duration;

use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{Commands, Connection, Script};

use super::{Created, Lease, LogError, RunLog, RunMeta};
use crate::runs::event::RunEvent;
use crate::store::redis_pool::Pool;

const ACTIVE: &str = "sn:v1:runs:active";
const ENDED: &str = "sn:v1:runs:ended";
const TIMEOUT: Duration = Duration::from_secs(3);

fn key(run: &str, part: &str) -> String {
    format!("sn:v1:run:{run}:{part}")
}

fn idem_key(account: &str, idem: &str) -> String {
    format!("sn:v1:runs:idem:{account}:{idem}")
}

fn list_key(account: &str, kind: &str) -> String {
    format!("sn:v1:runs:list:{account}:{kind}")
}

/// KEYS: idempotency, meta, events, active, list. ARGV: run id, meta, first event, whether
/// an idempotency key is given, created ms. Returns "" when created, else the existing
/// run's id.
const CREATE: &str = r#"
if ARGV[4] == '1' then
  local existing = redis.call('GET', KEYS[1])
  if existing then return existing end
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], '1-0', 'e', ARGV[3])
redis.call('ZADD', KEYS[4], 0, ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
return ''
"#;

/// KEYS: lease, events. ARGV: owner, first sequence, events. Returns 1, or -1 when fenced.
const APPEND: &str = r#"
local l = redis.call('GET', KEYS[1])
if not l or cjson.decode(l).ownerId ~= ARGV[1] then return -1 end
if redis.call('XLEN', KEYS[2]) ~= tonumber(ARGV[2]) then return -1 end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[2], (tonumber(ARGV[2]) + i - 2) .. '-0', 'e', ARGV[i])
end
return 1
"#;

/// KEYS: lease, active. ARGV: owner, now, until, a new lease id, run id. Returns the lease
/// (JSON), or false when another owner holds it.
const CLAIM: &str = r#"
local l = redis.call('GET', KEYS[1])
local lease = nil
if l then
  lease = cjson.decode(l)
  if lease.ownerId ~= ARGV[1] then
    if lease.expiresAt > tonumber(ARGV[2]) then return false end
    lease = nil
  end
end
if lease then
  lease.heartbeatAt = tonumber(ARGV[2])
  lease.expiresAt = tonumber(ARGV[3])
else
  lease = {leaseId = ARGV[4], ownerId = ARGV[1], acquiredAt = tonumber(ARGV[2]),
           heartbeatAt = tonumber(ARGV[2]), expiresAt = tonumber(ARGV[3])}
end
local s = cjson.encode(lease)
redis.call('SET', KEYS[1], s)
if redis.call('ZSCORE', KEYS[2], ARGV[5]) then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5]) end
return s
"#;

/// KEYS: lease, active. ARGV: owner, run id.
const PARK: &str = r#"
local l = redis.call('GET', KEYS[1])
if l and cjson.decode(l).ownerId == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"#;

pub struct RedisRunLog {
    pool: Pool,
    /// The connection that waits in `XREAD BLOCK` for followers.
    follower: Mutex<Option<Connection>>,
    create: Script,
    append: Script,
    claim: Script,
    park: Script,
}

fn backend(e: impl std::fmt::Display) -> LogError {
    LogError::Backend(format!("redis: {e}"))
}

fn event_of(id: &StreamId) -> Result<RunEvent, LogError> {
    let raw: String = id
        .get("e")
        .ok_or_else(|| LogError::Backend(format!("run event {} has no body", id.id)))?;
    serde_json::from_str(&raw).map_err(|e| LogError::Backend(format!("corrupt run event: {e}")))
}

/// The stream id after which the events after `after` come.
fn cursor(after: Option<u64>) -> String {
    after.map_or_else(|| "0-0".to_string(), |a| format!("{}-0", a + 1))
}

impl RedisRunLog {
    pub fn connect(url: &str) -> Result<Self, LogError> {
        let log = Self {
            pool: Pool::new(url, TIMEOUT).map_err(backend)?,
            follower: Mutex::new(None),
            create: Script::new(CREATE),
            append: Script::new(APPEND),
            claim: Script::new(CLAIM),
            park: Script::new(PARK),
        };
        log.pool
            .with(|c| redis::cmd("PING").query::<String>(c))
            .map_err(backend)?;
        Ok(log)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, LogError> {
        self.pool.with(f).map_err(backend)
    }
}

impl RunLog for RedisRunLog {
    fn create(&self, meta: &RunMeta, first: &RunEvent) -> Result<Created, LogError> {
        let mut first = first.clone();
        first.sequence = 0;
        let idem = meta
            .scoped_idempotency_key()
            .map(|k| idem_key(&meta.account_id, &k));
        let (meta_json, first_json) = (
            serde_json::to_string(meta).map_err(backend)?,
            serde_json::to_string(&first).map_err(backend)?,
        );
        let existing: String = self.with(|c| {
            self.create
                .key(idem.clone().unwrap_or_else(|| key(&meta.run_id, "idem")))
                .key(key(&meta.run_id, "meta"))
                .key(key(&meta.run_id, "events"))
                .key(ACTIVE)
                .key(list_key(&meta.account_id, &meta.kind))
                .arg(&meta.run_id)
                .arg(&meta_json)
                .arg(&first_json)
                .arg(if idem.is_some() { "1" } else { "0" })
                .arg(meta.created_ms)
                .invoke(c)
        })?;
        Ok(if existing.is_empty() {
            Created::New
        } else {
            Created::Existing(existing)
        })
    }

    fn meta(&self, run_id: &str) -> Result<Option<RunMeta>, LogError> {
        let raw: Option<String> = self.with(|c| c.get(key(run_id, "meta")))?;
        raw.map(|s| serde_json::from_str(&s).map_err(backend))
            .transpose()
    }

    fn append(&self, run_id: &str, owner: &str, events: &[RunEvent]) -> Result<(), LogError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let mut bodies = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let mut e = e.clone();
            e.sequence = first.sequence + i as u64;
            bodies.push(serde_json::to_string(&e).map_err(backend)?);
        }
        let r: i64 = self.with(|c| {
            let mut call = self.append.key(key(run_id, "lease"));
            call.key(key(run_id, "events"))
                .arg(owner)
                .arg(first.sequence);
            for b in &bodies {
                call.arg(b);
            }
            call.invoke(c)
        })?;
        if r < 0 {
            return Err(LogError::Fenced(run_id.to_string()));
        }
        Ok(())
    }

    fn read(&self, run_id: &str, after: Option<u64>) -> Result<Vec<RunEvent>, LogError> {
        let from = after.map_or_else(|| "-".to_string(), |a| format!("{}-0", a + 2));
        let reply: StreamRangeReply =
            self.with(|c| c.xrange(key(run_id, "events"), from.as_str(), "+"))?;
        reply.ids.iter().map(event_of).collect()
    }

    fn wait(
        &self,
        cursors: &[(String, Option<u64>)],
        timeout: Duration,
    ) -> Result<Vec<(String, Vec<RunEvent>)>, LogError> {
        if cursors.is_empty() {
            std::thread::sleep(timeout);
            return Ok(Vec::new());
        }
        let keys: Vec<String> = cursors.iter().map(|(r, _)| key(r, "events")).collect();
        let ids: Vec<String> = cursors.iter().map(|(_, a)| cursor(*a)).collect();
        let block = timeout.as_millis().max(1) as usize;
        let mut slot = crate::locks::lock(&self.follower);
        let conn = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(self.pool.dedicated(timeout + TIMEOUT).map_err(backend)?),
        };
        let opts = StreamReadOptions::default().block(block);
        let reply: Result<Option<StreamReadReply>, _> = conn.xread_options(&keys, &ids, &opts);
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                *slot = None;
                return Err(backend(e));
            }
        };
        let mut out = Vec::new();
        for k in reply.map(|r| r.keys).unwrap_or_default() {
            let run = k
                .key
                .strip_prefix("sn:v1:run:")
                .and_then(|s| s.strip_suffix(":events"))
                .unwrap_or_default()
                .to_string();
            let events = k.ids.iter().map(event_of).collect::<Result<_, _>>()?;
            out.push((run, events));
        }
        Ok(out)
    }

    fn claim(
        &self,
        run_id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Lease>, LogError> {
        let lease_id = crate::ids::random_hex(8).map_err(backend)?;
        let raw: Option<String> = self.with(|c| {
            self.claim
                .key(key(run_id, "lease"))
                .key(ACTIVE)
                .arg(owner)
                .arg(now_ms)
                .arg(until_ms)
                .arg(&lease_id)
                .arg(run_id)
                .invoke(c)
        })?;
        raw.map(|s| serde_json::from_str(&s).map_err(backend))
            .transpose()
    }

    fn lease(&self, run_id: &str) -> Result<Option<Lease>, LogError> {
        let raw: Option<String> = self.with(|c| c.get(key(run_id, "lease")))?;
        raw.map(|s| serde_json::from_str(&s).map_err(backend))
            .transpose()
    }

    fn park(&self, run_id: &str, owner: &str) -> Result<(), LogError> {
        self.with(|c| {
            self.park
                .key(key(run_id, "lease"))
                .key(ACTIVE)
                .arg(owner)
                .arg(run_id)
                .invoke::<i64>(c)
        })?;
        Ok(())
    }

    fn activate(&self, run_id: &str) -> Result<(), LogError> {
        self.with(|c| {
            redis::cmd("ZADD")
                .arg(ACTIVE)
                .arg("NX")
                .arg(0)
                .arg(run_id)
                .query::<i64>(c)
        })?;
        Ok(())
    }

    fn reopen(&self, run_id: &str) -> Result<(), LogError> {
        self.with(|c| {
            redis::pipe()
                .atomic()
                .zrem(ENDED, run_id)
                .del(key(run_id, "cancel"))
                .zadd(ACTIVE, run_id, 0)
                .query::<()>(c)
        })
    }

    fn list(
        &self,
        account_id: &str,
        kind: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<String>, LogError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.with(|c| {
            c.zrevrange(
                list_key(account_id, kind),
                offset as isize,
                (offset + limit - 1) as isize,
            )
        })
    }

    fn orphans(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, LogError> {
        self.with(|c| {
            c.zrangebyscore_limit(ACTIVE, "-inf", format!("({now_ms}"), 0, limit as isize)
        })
    }

    fn request_cancel(&self, run_id: &str, reason: &str) -> Result<(), LogError> {
        self.with(|c| c.set::<_, _, ()>(key(run_id, "cancel"), reason))
    }

    fn cancel_requested(&self, run_id: &str) -> Result<Option<String>, LogError> {
        self.with(|c| c.get(key(run_id, "cancel")))
    }

    fn finished(&self, run_id: &str, at_ms: u64) -> Result<(), LogError> {
        self.with(|c| c.zadd::<_, _, _, ()>(ENDED, run_id, at_ms))
    }

    fn ended_before(&self, before_ms: u64, limit: usize) -> Result<Vec<String>, LogError> {
        self.with(|c| {
            c.zrangebyscore_limit(ENDED, "-inf", format!("({before_ms}"), 0, limit as isize)
        })
    }

    fn delete(&self, run_id: &str) -> Result<(), LogError> {
        let meta = self.meta(run_id)?;
        let mut keys: Vec<String> = ["events", "meta", "lease", "cancel"]
            .iter()
            .map(|p| key(run_id, p))
            .collect();
        let mut listed = None;
        if let Some(m) = &meta {
            if let Some(k) = m.scoped_idempotency_key() {
                keys.push(idem_key(&m.account_id, &k));
            }
            listed = Some(list_key(&m.account_id, &m.kind));
        }
        self.with(|c| {
            let mut p = redis::pipe();
            if let Some(l) = &listed {
                p.zrem(l, run_id);
            }
            p.atomic()
                .del(&keys)
                .zrem(ACTIVE, run_id)
                .zrem(ENDED, run_id)
                .query::<()>(c)
        })
    }
}
