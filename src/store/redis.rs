//! The cluster's [`Store`]: accounts, keys and the ledger in Redis, shared by every front.
//!
//! Money changes are optimistic transactions: the balance arithmetic runs here in Rust
//! (exact 18-decimal amounts, which Lua's doubles cannot hold), and one Lua script,
//! [`COMMIT`], applies the result only if the account and hold records are still the ones it
//! was computed from, assigning ledger sequence numbers as it writes. A script runs
//! atomically in Redis, so two fronts billing one account never both spend the same
//! balance: the second one's commit sees a changed record and is recomputed. Replays of a
//! hold or settlement find the hold record and change nothing.
//!
//! Durability is Redis's: run it with `appendonly yes` and `appendfsync always` to lose no
//! committed entry in a crash (the cluster tests do).
//!
//! | key | type | value |
//! |---|---|---|
//! | `sn:v1:account:{id}` | string | [`Account`] (JSON) |
//! | `sn:v1:ledger:{account}` | list | [`LedgerEntry`] (JSON), oldest first |
//! | `sn:v1:ledger:seq` | counter | the last ledger sequence number |
//! | `sn:v1:hold:{job}` | string | [`Hold`] (JSON) |
//! | `sn:v1:holds:open` | sorted set | open holds' job ids, scored by lease end |
//! | `sn:v1:earnings:{worker}` | list | [`Earning`] (JSON), oldest first |
//! | `sn:v1:apikey:{key id}` | string | the key record and its secret's hash (JSON) |
//! | `sn:v1:apikey-hash:{sha256}` | string | key id |

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::{Commands, Connection, RedisError, Script};
use serde::{de::DeserializeOwned, Serialize};

use super::redis_pool::Pool;
use super::{
    apply, first_covered, key_hash, new_secret, non_negative, random_id, replays, Account,
    ApiKeyRecord, Balances, Earning, EntryKind, Hold, HoldOrder, KeyProof, LedgerEntry, NewKey,
    Store, StoreError, StoredKey, TokenType, HOLD_LEASE_SECS,
};
use crate::bus::Outbox;
use crate::clock::unix_secs;
use crate::money::Amount;

const SEQ: &str = "sn:v1:ledger:seq";
const OPEN_HOLDS: &str = "sn:v1:holds:open";
/// Tries of one money change against concurrent writers before giving up.
const ATTEMPTS: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(3);

fn account_key(id: &str) -> String {
    format!("sn:v1:account:{id}")
}
fn ledger_key(account: &str) -> String {
    format!("sn:v1:ledger:{account}")
}
fn hold_key(job: &str) -> String {
    format!("sn:v1:hold:{job}")
}
fn earnings_key(worker: &str) -> String {
    format!("sn:v1:earnings:{worker}")
}
fn apikey_key(key_id: &str) -> String {
    format!("sn:v1:apikey:{key_id}")
}
fn apikey_hash_key(hash: &str) -> String {
    format!("sn:v1:apikey-hash:{hash}")
}

/// Applies one money change if the records it was computed from are unchanged.
///
/// KEYS: account, hold, ledger seq, account ledger, open holds, earnings, outbox stream,
/// API key. ARGV: expected account ("" = absent), new account, expected hold ("" = absent,
/// "-" = not checked), new hold ("" = unchanged), job id, hold lease ("open:SECS" to open,
/// "close" to close, "" unchanged), earning ("" = none), the outbox stream's length ("" =
/// no outbox entry), field and value, the hash the API key's secret must have ("" = no
/// key check), then ledger entries whose `seq` is assigned here. Returns the assigned
/// seqs, -1 when a record changed, or -2 when the key is disabled or has another secret.
const COMMIT: &str = r#"
if ARGV[11] ~= '' then
  local k = redis.call('GET', KEYS[8])
  if not k then return -2 end
  local stored = cjson.decode(k)
  if stored.hash ~= ARGV[11] or stored.record.disabled ~= false then return -2 end
end
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return -1 end
if ARGV[3] ~= '-' and (redis.call('GET', KEYS[2]) or '') ~= ARGV[3] then return -1 end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4]) end
if string.sub(ARGV[6], 1, 5) == 'open:' then
  redis.call('ZADD', KEYS[5], tonumber(string.sub(ARGV[6], 6)), ARGV[5])
elseif ARGV[6] == 'close' then
  redis.call('ZREM', KEYS[5], ARGV[5])
end
if ARGV[7] ~= '' then redis.call('RPUSH', KEYS[6], ARGV[7]) end
if ARGV[8] ~= '' then redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[8], '*', ARGV[9], ARGV[10]) end
local seqs = {}
for i = 12, #ARGV do
  local entry = cjson.decode(ARGV[i])
  entry.seq = redis.call('INCR', KEYS[3]) - 1
  redis.call('RPUSH', KEYS[4], cjson.encode(entry))
  seqs[#seqs + 1] = entry.seq
end
return seqs
"#;

/// One money change, as computed from the records read.
struct Change<'a> {
    account_id: String,
    expected_account: String,
    account: Account,
    /// The hold's key, expected and new value; `None` when the change involves no hold.
    hold: Option<(String, String, Option<Hold>)>,
    lease: Lease,
    earning: Option<Earning>,
    /// The ledger entries to append; the commit assigns their `seq`.
    entries: Vec<LedgerEntry>,
    /// A bus entry written with the change.
    outbox: Option<&'a Outbox>,
    /// The API key that must still be valid for the change to apply.
    key: Option<&'a KeyProof>,
}

/// What a change does to the hold's place in the open-holds set.
enum Lease {
    Unchanged,
    Open(i64),
    Close,
}

pub struct RedisStore {
    /// Each call takes a connection of its own for its duration, so calls from many
    /// requests run side by side instead of queueing on a single socket.
    pool: Pool,
    commit: Script,
    authenticate: Script,
    /// Account and hold records as this process last committed them. A change's first try
    /// computes from these instead of reading them back (a hot account's holds and settles
    /// then take one round trip each); the commit checks they are still current, and a
    /// conflict forgets them and reads afresh.
    known: Mutex<HashMap<String, String>>,
}

/// The enabled-or-not record of the key whose secret hashes to KEYS[1], in one round trip
/// (authentication is on every request's path). ARGV[1]: the key records' prefix.
const AUTHENTICATE: &str = r#"
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('GET', ARGV[1] .. id)
"#;

/// Records remembered at most; past this the memory starts over.
const MAX_KNOWN: usize = 100_000;

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

fn encode<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(backend)
}

fn decode<T: DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Backend(format!("corrupt record: {e}")))
}

impl RedisStore {
    /// Connects to `url`; fails at once if Redis cannot be reached.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self {
            pool: Pool::new(url, TIMEOUT).map_err(backend)?,
            commit: Script::new(COMMIT),
            authenticate: Script::new(AUTHENTICATE),
            known: Mutex::new(HashMap::new()),
        };
        store.with(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(store)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, StoreError> {
        self.pool.with(f).map_err(backend)
    }

    fn get_raw(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| c.get(key))
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.get_raw(key)?.map(|s| decode(&s)).transpose()
    }

    /// The newest `limit` records of a list, oldest first.
    fn newest<T: DeserializeOwned>(&self, key: &str, limit: usize) -> Result<Vec<T>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = -(limit.min(isize::MAX as usize) as isize);
        let raw: Vec<String> = self.with(|c| c.lrange(key, start, -1))?;
        raw.iter().map(|s| decode(s)).collect()
    }

    /// The account record as stored (for the commit's check) and decoded; unless `fresh`,
    /// as this process last committed it, when it has.
    fn account_raw(&self, id: &str, fresh: bool) -> Result<(String, Account), StoreError> {
        let raw = self
            .current(&account_key(id), fresh)?
            .ok_or_else(|| StoreError::NoAccount(id.to_string()))?;
        let acct = decode(&raw)?;
        Ok((raw, acct))
    }

    /// A record as stored; unless `fresh`, as this process last committed it, when it has.
    fn current(&self, key: &str, fresh: bool) -> Result<Option<String>, StoreError> {
        if !fresh {
            if let Some(raw) = crate::locks::lock(&self.known).get(key) {
                return Ok(Some(raw.clone()));
            }
        }
        self.get_raw(key)
    }

    /// Remembers what a commit wrote, or forgets what it found changed.
    fn learn(&self, account: (String, Option<String>), hold: Option<(String, Option<String>)>) {
        let mut known = crate::locks::lock(&self.known);
        if known.len() >= MAX_KNOWN {
            known.clear();
        }
        for (key, value) in std::iter::once(account).chain(hold) {
            match value {
                Some(v) => known.insert(key, v),
                None => known.remove(&key),
            };
        }
    }

    /// Commits `change`; `Ok(None)` when a record changed underneath (compute again).
    fn commit(&self, change: &Change<'_>) -> Result<Option<Vec<u64>>, StoreError> {
        let (hold_key, expected_hold, new_hold) = match &change.hold {
            Some((k, expected, new)) => (
                k.clone(),
                expected.clone(),
                new.as_ref().map(encode).transpose()?.unwrap_or_default(),
            ),
            None => (hold_key(""), "-".to_string(), String::new()),
        };
        let job = change
            .hold
            .as_ref()
            .and_then(|h| h.2.as_ref())
            .map(|h| h.job_id.clone())
            .unwrap_or_default();
        let lease = match change.lease {
            Lease::Unchanged => String::new(),
            Lease::Open(until) => format!("open:{until}"),
            Lease::Close => "close".to_string(),
        };
        let earning_key = change
            .earning
            .as_ref()
            .map_or_else(|| earnings_key(""), |e| earnings_key(&e.worker_id));
        let new_account = encode(&change.account)?;
        let mut inv = self.commit.prepare_invoke();
        // An absent outbox still names a key, as a script's keys must be declared; it is not touched.
        let outbox_stream = change.outbox.map_or(OPEN_HOLDS, |o| o.stream.as_str());
        let api_key = apikey_key(change.key.map_or("", |k| k.key_id.as_str()));
        inv.key(account_key(&change.account_id))
            .key(&hold_key)
            .key(SEQ)
            .key(ledger_key(&change.account_id))
            .key(OPEN_HOLDS)
            .key(earning_key)
            .key(outbox_stream)
            .key(api_key);
        inv.arg(&change.expected_account)
            .arg(&new_account)
            .arg(&expected_hold)
            .arg(&new_hold)
            .arg(job)
            .arg(lease);
        inv.arg(
            change
                .earning
                .as_ref()
                .map(encode)
                .transpose()?
                .unwrap_or_default(),
        );
        match change.outbox {
            Some(o) => inv.arg(o.max_len.max(1)).arg(o.field).arg(&o.bytes),
            None => inv.arg("").arg("").arg(""),
        };
        inv.arg(change.key.map_or("", |k| k.secret_hash.as_str()));
        for e in &change.entries {
            inv.arg(encode(e)?);
        }
        let reply: redis::Value = self.with(|c| inv.invoke(c))?;
        let account = account_key(&change.account_id);
        // A settled hold is never changed again: nothing to remember.
        let open_hold = change
            .hold
            .as_ref()
            .and_then(|h| h.2.as_ref())
            .filter(|h| h.settled.is_none())
            .map(|_| new_hold.clone());
        match reply {
            redis::Value::Int(-2) => Err(StoreError::KeyRevoked(
                change.key.map(|k| k.key_id.clone()).unwrap_or_default(),
            )),
            redis::Value::Int(-1) => {
                self.learn(
                    (account, None),
                    change.hold.is_some().then_some((hold_key, None)),
                );
                Ok(None)
            }
            v => {
                let seqs = redis::from_redis_value::<Vec<u64>>(&v).map_err(backend)?;
                self.learn(
                    (account, Some(new_account)),
                    change.hold.is_some().then_some((hold_key, open_hold)),
                );
                Ok(Some(seqs))
            }
        }
    }

    /// Computes and commits a change until it applies against current records.
    fn transact<'c, T>(
        &self,
        mut compute: impl FnMut(bool) -> Result<Result<(Change<'c>, T), T>, StoreError>,
        done: impl Fn(T, Vec<u64>) -> T,
    ) -> Result<T, StoreError> {
        for attempt in 0..ATTEMPTS {
            // The first try may compute from remembered records; a retry reads afresh, and so
            // does a first try that refused (the refusal may be the remembered record's).
            let computed = match compute(attempt > 0) {
                Err(_) if attempt == 0 => compute(true),
                r => r,
            };
            let (change, out) = match computed? {
                Ok(c) => c,
                // Nothing to change (an idempotent replay).
                Err(out) => return Ok(out),
            };
            if let Some(seqs) = self.commit(&change)? {
                return Ok(done(out, seqs));
            }
        }
        Err(StoreError::Backend(format!(
            "redis: gave up after {ATTEMPTS} conflicting writers"
        )))
    }
}

/// A ledger entry whose `seq` the commit assigns.
fn entry(
    account: &Account,
    kind: EntryKind,
    token: TokenType,
    amount: Amount,
    reference: &str,
) -> LedgerEntry {
    LedgerEntry {
        seq: 0,
        account_id: account.id.clone(),
        kind,
        token_type: token,
        amount,
        reference: reference.to_string(),
        balance_after: account.balances.get(token),
        at: unix_secs(),
    }
}

impl Store for RedisStore {
    fn create_account(&self, name: &str, opening: &Balances) -> Result<Account, StoreError> {
        non_negative(opening.spark)?;
        non_negative(opening.sogni)?;
        let id = random_id("acct_")?;
        let mut acct = Account {
            id: id.clone(),
            name: name.to_string(),
            created: unix_secs(),
            balances: Balances {
                spark: Amount::ZERO,
                sogni: Amount::ZERO,
            },
        };
        let mut entries = Vec::new();
        for token in [TokenType::Spark, TokenType::Sogni] {
            let amount = opening.get(token);
            if amount != Amount::ZERO {
                apply(&mut acct.balances, token, amount, false)?;
                entries.push(entry(
                    &acct,
                    EntryKind::Credit,
                    token,
                    amount,
                    "opening balance",
                ));
            }
        }
        let change = Change {
            account_id: id,
            expected_account: String::new(),
            account: acct.clone(),
            hold: None,
            lease: Lease::Unchanged,
            earning: None,
            entries,
            outbox: None,
            key: None,
        };
        self.commit(&change)?
            .ok_or_else(|| backend("account id collision"))?;
        Ok(acct)
    }

    fn account(&self, id: &str) -> Result<Account, StoreError> {
        self.get(&account_key(id))?
            .ok_or_else(|| StoreError::NoAccount(id.to_string()))
    }

    fn credit(
        &self,
        account_id: &str,
        token: TokenType,
        amount: Amount,
        reference: &str,
    ) -> Result<LedgerEntry, StoreError> {
        non_negative(amount)?;
        self.transact(
            |fresh| {
                let (raw, mut acct) = self.account_raw(account_id, fresh)?;
                apply(&mut acct.balances, token, amount, false)?;
                let e = entry(&acct, EntryKind::Credit, token, amount, reference);
                Ok(Ok((
                    Change {
                        account_id: account_id.to_string(),
                        expected_account: raw,
                        account: acct,
                        hold: None,
                        lease: Lease::Unchanged,
                        earning: None,
                        entries: vec![e.clone()],
                        outbox: None,
                        key: None,
                    },
                    e,
                )))
            },
            |e, seqs| LedgerEntry {
                seq: seqs.first().copied().unwrap_or(e.seq),
                ..e
            },
        )
    }

    fn ledger(&self, account_id: &str, limit: usize) -> Result<Vec<LedgerEntry>, StoreError> {
        self.account(account_id)?;
        self.newest(&ledger_key(account_id), limit)
    }

    fn hold_first(&self, order: &HoldOrder<'_>) -> Result<Hold, StoreError> {
        let HoldOrder {
            job_id,
            account_id,
            tenders,
            key: proof,
            then,
        } = *order;
        // The first try assumes the hold is new (the commit checks that it is), saving a
        // read on the common path; a retry reads it, and replays one already placed.
        self.transact(
            |fresh| {
                let key = hold_key(job_id);
                let existing = if fresh { self.get::<Hold>(&key)? } else { None };
                if let Some(h) = existing {
                    replays(&h, account_id, tenders)?;
                    return Ok(Err(h));
                }
                let (raw, mut acct) = self.account_raw(account_id, fresh)?;
                let (token, amount) = first_covered(&acct.balances, tenders)?;
                apply(&mut acct.balances, token, amount, true)?;
                let e = entry(&acct, EntryKind::Hold, token, amount, job_id);
                let h = Hold {
                    job_id: job_id.to_string(),
                    account_id: account_id.to_string(),
                    token_type: token,
                    amount,
                    settled: None,
                    worker_id: None,
                };
                let change = Change {
                    account_id: account_id.to_string(),
                    expected_account: raw,
                    account: acct,
                    hold: Some((key, String::new(), Some(h.clone()))),
                    lease: Lease::Open(unix_secs() + HOLD_LEASE_SECS),
                    earning: None,
                    entries: vec![e],
                    outbox: then,
                    key: proof,
                };
                Ok(Ok((change, h)))
            },
            |h, _| h,
        )
    }

    fn settle(
        &self,
        job_id: &str,
        charged: Amount,
        worker_id: Option<&str>,
    ) -> Result<Hold, StoreError> {
        non_negative(charged)?;
        self.transact(
            |fresh| {
                let key = hold_key(job_id);
                let raw_hold = self
                    .current(&key, fresh)?
                    .ok_or_else(|| StoreError::NoHold(job_id.to_string()))?;
                let mut h: Hold = decode(&raw_hold)?;
                if h.settled.is_some() {
                    return Ok(Err(h));
                }
                let rest = h
                    .amount
                    .checked_sub(charged)
                    .filter(|r| !r.is_negative())
                    .ok_or(StoreError::OverCharge {
                        charged,
                        held: h.amount,
                    })?;
                let (raw, mut acct) = self.account_raw(&h.account_id, fresh)?;
                // The charge was taken at hold time; the entry records it, the rest comes back.
                let settle = entry(&acct, EntryKind::Settle, h.token_type, charged, job_id);
                apply(&mut acct.balances, h.token_type, rest, false)?;
                let release = entry(&acct, EntryKind::Release, h.token_type, rest, job_id);
                let earning = worker_id
                    .filter(|_| charged > Amount::ZERO)
                    .map(|w| Earning {
                        worker_id: w.to_string(),
                        job_id: job_id.to_string(),
                        token_type: h.token_type,
                        amount: charged,
                        at: settle.at,
                    });
                h.settled = Some(charged);
                h.worker_id = worker_id.map(str::to_string);
                let change = Change {
                    account_id: h.account_id.clone(),
                    expected_account: raw,
                    account: acct,
                    hold: Some((key, raw_hold, Some(h.clone()))),
                    lease: Lease::Close,
                    earning,
                    entries: vec![settle, release],
                    outbox: None,
                    key: None,
                };
                Ok(Ok((change, h)))
            },
            |h, _| h,
        )
    }

    fn hold_of(&self, job_id: &str) -> Result<Hold, StoreError> {
        self.get(&hold_key(job_id))?
            .ok_or_else(|| StoreError::NoHold(job_id.to_string()))
    }

    fn renew_hold(&self, job_id: &str, expires_at: i64) -> Result<(), StoreError> {
        // XX: only a hold still in the open set is renewed.
        self.with(|c| {
            redis::cmd("ZADD")
                .arg(OPEN_HOLDS)
                .arg("XX")
                .arg(expires_at)
                .arg(job_id)
                .query::<i64>(c)
        })
        .map(drop)
    }

    fn expired_holds(&self, now: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            redis::cmd("ZRANGE")
                .arg(OPEN_HOLDS)
                .arg("-inf")
                .arg(format!("({now}"))
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query(c)
        })
    }

    fn earnings(&self, worker_id: &str, limit: usize) -> Result<Vec<Earning>, StoreError> {
        self.newest(&earnings_key(worker_id), limit)
    }

    fn create_key(&self, account_id: &str) -> Result<NewKey, StoreError> {
        self.account(account_id)?;
        let key_id = random_id("key_")?;
        let (api_key, hash) = new_secret()?;
        let record = ApiKeyRecord {
            key_id: key_id.clone(),
            account_id: account_id.to_string(),
            created: unix_secs(),
            disabled: false,
        };
        let stored = encode(&StoredKey {
            record,
            hash: hash.clone(),
        })?;
        self.with(|c| {
            redis::pipe()
                .atomic()
                .set(apikey_key(&key_id), stored)
                .set(apikey_hash_key(&hash), &key_id)
                .query::<()>(c)
        })?;
        Ok(NewKey { key_id, api_key })
    }

    fn regenerate_key(&self, key_id: &str) -> Result<NewKey, StoreError> {
        let mut k: StoredKey = self
            .get(&apikey_key(key_id))?
            .ok_or_else(|| StoreError::NoKey(key_id.to_string()))?;
        let (api_key, hash) = new_secret()?;
        let old = std::mem::replace(&mut k.hash, hash.clone());
        let stored = encode(&k)?;
        self.with(|c| {
            redis::pipe()
                .atomic()
                .del(apikey_hash_key(&old))
                .set(apikey_hash_key(&hash), key_id)
                .set(apikey_key(key_id), stored)
                .query::<()>(c)
        })?;
        Ok(NewKey {
            key_id: key_id.to_string(),
            api_key,
        })
    }

    fn disable_key(&self, key_id: &str) -> Result<ApiKeyRecord, StoreError> {
        let mut k: StoredKey = self
            .get(&apikey_key(key_id))?
            .ok_or_else(|| StoreError::NoKey(key_id.to_string()))?;
        k.record.disabled = true;
        let stored = encode(&k)?;
        self.with(|c| c.set::<_, _, ()>(apikey_key(key_id), stored))?;
        Ok(k.record)
    }

    fn authenticate(&self, api_key: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let stored: Option<String> = self.with(|c| {
            self.authenticate
                .key(apikey_hash_key(&key_hash(api_key)))
                .arg(apikey_key(""))
                .invoke(c)
        })?;
        let Some(k) = stored.map(|s| decode::<StoredKey>(&s)).transpose()? else {
            return Ok(None);
        };
        Ok((!k.record.disabled).then_some(k.record))
    }
}
