//! The run log of `supernet serve`: a redb file (`runs.redb`) beside the ledger's, one write
//! transaction per operation (durable when it returns). Waiting followers sleep on a condition
//! variable that every append signals, with the last sequence of each run kept in memory, so
//! a wake reads from disk only the runs that grew.
//!
//! | table | key | value |
//! |---|---|---|
//! | `run_events` | (run id, sequence) | [`RunEvent`] (JSON) |
//! | `run_meta` | run id | [`RunMeta`] (JSON) |
//! | `run_idempotency` | (account id, key) | run id |
//! | `run_leases` | run id | [`Lease`] (JSON) |
//! | `run_active` | run id | lease end, unix ms (0: none), while it needs an executor |
//! | `run_cancel` | run id | the cancel's reason |
//! | `run_ended` | run id | when it ended, unix ms |

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use super::{Created, Lease, LogError, RunLog, RunMeta};
use crate::runs::event::RunEvent;

const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("run_events");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("run_meta");
const IDEMPOTENCY: TableDefinition<(&str, &str), &str> = TableDefinition::new("run_idempotency");
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("run_leases");
const ACTIVE: TableDefinition<&str, u64> = TableDefinition::new("run_active");
const CANCEL: TableDefinition<&str, &str> = TableDefinition::new("run_cancel");
const ENDED: TableDefinition<&str, u64> = TableDefinition::new("run_ended");
/// (account, kind, `u64::MAX` - created ms, run id): each account's runs, newest first.
const LISTED: TableDefinition<(&str, &str, u64, &str), ()> = TableDefinition::new("run_listed");

/// The file name under the data dir.
pub const FILE: &str = "runs.redb";

pub struct RedbRunLog {
    db: Database,
    /// The next sequence of each run appended to or read since the process started.
    next: Mutex<HashMap<String, u64>>,
    appended: Condvar,
}

fn backend(e: impl std::fmt::Display) -> LogError {
    LogError::Backend(e.to_string())
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, LogError> {
    serde_json::to_vec(v).map_err(backend)
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, LogError> {
    serde_json::from_slice(b).map_err(|e| LogError::Backend(format!("corrupt run record: {e}")))
}

impl RedbRunLog {
    /// Opens (or creates) the log in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, LogError> {
        std::fs::create_dir_all(data_dir).map_err(backend)?;
        let path = data_dir.join(FILE);
        let db = Database::create(&path)
            .map_err(|e| LogError::Backend(format!("opening {}: {e}", path.display())))?;
        let log = Self {
            db,
            next: Mutex::new(HashMap::new()),
            appended: Condvar::new(),
        };
        log.write(|tx| {
            tx.open_table(EVENTS).map_err(backend)?;
            tx.open_table(META).map_err(backend)?;
            tx.open_table(IDEMPOTENCY).map_err(backend)?;
            tx.open_table(LEASES).map_err(backend)?;
            tx.open_table(ACTIVE).map_err(backend)?;
            tx.open_table(CANCEL).map_err(backend)?;
            tx.open_table(ENDED).map_err(backend)?;
            tx.open_table(LISTED).map_err(backend)?;
            Ok(())
        })?;
        Ok(log)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        let tx = self.db.begin_write().map_err(backend)?;
        let out = f(&tx)?;
        tx.commit().map_err(backend)?;
        Ok(out)
    }

    fn read_tx(&self) -> Result<redb::ReadTransaction, LogError> {
        self.db.begin_read().map_err(backend)
    }

    /// Up to `limit` runs of `table` whose time is before `bound`.
    fn below(
        &self,
        table: TableDefinition<&str, u64>,
        bound: u64,
        limit: usize,
    ) -> Result<Vec<String>, LogError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(table).map_err(backend)?;
        let mut out = Vec::new();
        for r in t.iter().map_err(backend)? {
            let (k, v) = r.map_err(backend)?;
            if v.value() < bound {
                out.push(k.value().to_string());
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The run's next sequence, from memory or (once) from the file.
    fn next_of(&self, run_id: &str) -> Result<u64, LogError> {
        if let Some(n) = crate::locks::lock(&self.next).get(run_id) {
            return Ok(*n);
        }
        let tx = self.read_tx()?;
        let last = next_after(&tx.open_table(EVENTS).map_err(backend)?, run_id)?;
        crate::locks::lock(&self.next).insert(run_id.to_string(), last);
        Ok(last)
    }
}

fn listed_key(m: &RunMeta) -> (&str, &str, u64, &str) {
    (
        m.account_id.as_str(),
        m.kind.as_str(),
        u64::MAX - m.created_ms,
        m.run_id.as_str(),
    )
}

fn lease_of(tx: &WriteTransaction, run_id: &str) -> Result<Option<Lease>, LogError> {
    let t = tx.open_table(LEASES).map_err(backend)?;
    let v = t.get(run_id).map_err(backend)?;
    v.map(|v| decode(v.value())).transpose()
}

fn next_in(tx: &WriteTransaction, run_id: &str) -> Result<u64, LogError> {
    next_after(&tx.open_table(EVENTS).map_err(backend)?, run_id)
}

/// The sequence after the last event of `run_id` in `events` (0 for none).
fn next_after(
    events: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    run_id: &str,
) -> Result<u64, LogError> {
    Ok(events
        .range((run_id, 0)..=(run_id, u64::MAX))
        .map_err(backend)?
        .next_back()
        .transpose()
        .map_err(backend)?
        .map_or(0, |(k, _)| k.value().1 + 1))
}

impl RunLog for RedbRunLog {
    fn create(&self, meta: &RunMeta, first: &RunEvent) -> Result<Created, LogError> {
        let created = self.write(|tx| {
            if let Some(key) = &meta.scoped_idempotency_key() {
                let mut idem = tx.open_table(IDEMPOTENCY).map_err(backend)?;
                let existing = idem
                    .get((meta.account_id.as_str(), key.as_str()))
                    .map_err(backend)?
                    .map(|v| v.value().to_string());
                if let Some(run) = existing {
                    return Ok(Created::Existing(run));
                }
                idem.insert(
                    (meta.account_id.as_str(), key.as_str()),
                    meta.run_id.as_str(),
                )
                .map_err(backend)?;
            }
            let id = meta.run_id.as_str();
            tx.open_table(META)
                .map_err(backend)?
                .insert(id, encode(meta)?.as_slice())
                .map_err(backend)?;
            let mut first = first.clone();
            first.sequence = 0;
            tx.open_table(EVENTS)
                .map_err(backend)?
                .insert((id, 0), encode(&first)?.as_slice())
                .map_err(backend)?;
            tx.open_table(ACTIVE)
                .map_err(backend)?
                .insert(id, 0)
                .map_err(backend)?;
            tx.open_table(LISTED)
                .map_err(backend)?
                .insert(listed_key(meta), ())
                .map_err(backend)?;
            Ok(Created::New)
        })?;
        if created == Created::New {
            crate::locks::lock(&self.next).insert(meta.run_id.clone(), 1);
            self.appended.notify_all();
        }
        Ok(created)
    }

    fn meta(&self, run_id: &str) -> Result<Option<RunMeta>, LogError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(META).map_err(backend)?;
        let v = t.get(run_id).map_err(backend)?;
        v.map(|v| decode(v.value())).transpose()
    }

    fn append(&self, run_id: &str, owner: &str, events: &[RunEvent]) -> Result<(), LogError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let next = self.write(|tx| {
            let holds = lease_of(tx, run_id)?.is_some_and(|l| l.owner_id == owner);
            if !holds || next_in(tx, run_id)? != first.sequence {
                return Err(LogError::Fenced(run_id.to_string()));
            }
            let mut t = tx.open_table(EVENTS).map_err(backend)?;
            for (i, e) in events.iter().enumerate() {
                let mut e = e.clone();
                e.sequence = first.sequence + i as u64;
                t.insert((run_id, e.sequence), encode(&e)?.as_slice())
                    .map_err(backend)?;
            }
            Ok(first.sequence + events.len() as u64)
        })?;
        crate::locks::lock(&self.next).insert(run_id.to_string(), next);
        self.appended.notify_all();
        Ok(())
    }

    fn read(&self, run_id: &str, after: Option<u64>) -> Result<Vec<RunEvent>, LogError> {
        let from = after.map_or(0, |a| a.saturating_add(1));
        let tx = self.read_tx()?;
        let t = tx.open_table(EVENTS).map_err(backend)?;
        let mut out = Vec::new();
        for r in t
            .range((run_id, from)..=(run_id, u64::MAX))
            .map_err(backend)?
        {
            let (_, v) = r.map_err(backend)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn wait(
        &self,
        cursors: &[(String, Option<u64>)],
        timeout: Duration,
    ) -> Result<Vec<(String, Vec<RunEvent>)>, LogError> {
        let deadline = Instant::now() + timeout;
        for (run, _) in cursors {
            self.next_of(run)?;
        }
        loop {
            let grown: Vec<&(String, Option<u64>)> = {
                let next = crate::locks::lock(&self.next);
                let grown: Vec<_> = cursors
                    .iter()
                    .filter(|(run, after)| {
                        let want = after.map_or(0, |a| a + 1);
                        next.get(run).is_some_and(|n| *n > want)
                    })
                    .collect();
                let now = Instant::now();
                if grown.is_empty() && now < deadline {
                    let _unused = self
                        .appended
                        .wait_timeout(next, deadline - now)
                        .map_err(|_| LogError::Backend("a poisoned lock".into()))?;
                    continue;
                }
                grown
            };
            let mut out = Vec::with_capacity(grown.len());
            for (run, after) in grown {
                out.push((run.clone(), self.read(run, *after)?));
            }
            return Ok(out);
        }
    }

    fn claim(
        &self,
        run_id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Lease>, LogError> {
        self.write(|tx| {
            let current = lease_of(tx, run_id)?;
            let lease = match current {
                Some(l) if l.owner_id == owner => Lease {
                    heartbeat_at: now_ms,
                    expires_at: until_ms,
                    ..l
                },
                Some(l) if l.expires_at > now_ms => return Ok(None),
                _ => Lease {
                    lease_id: crate::ids::random_hex(8).map_err(backend)?,
                    owner_id: owner.to_string(),
                    acquired_at: now_ms,
                    heartbeat_at: now_ms,
                    expires_at: until_ms,
                },
            };
            tx.open_table(LEASES)
                .map_err(backend)?
                .insert(run_id, encode(&lease)?.as_slice())
                .map_err(backend)?;
            let mut active = tx.open_table(ACTIVE).map_err(backend)?;
            if active.get(run_id).map_err(backend)?.is_some() {
                active.insert(run_id, until_ms).map_err(backend)?;
            }
            Ok(Some(lease))
        })
    }

    fn lease(&self, run_id: &str) -> Result<Option<Lease>, LogError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(LEASES).map_err(backend)?;
        let v = t.get(run_id).map_err(backend)?;
        v.map(|v| decode(v.value())).transpose()
    }

    fn park(&self, run_id: &str, owner: &str) -> Result<(), LogError> {
        self.write(|tx| {
            if lease_of(tx, run_id)?.is_some_and(|l| l.owner_id == owner) {
                tx.open_table(LEASES)
                    .map_err(backend)?
                    .remove(run_id)
                    .map_err(backend)?;
            }
            tx.open_table(ACTIVE)
                .map_err(backend)?
                .remove(run_id)
                .map_err(backend)?;
            Ok(())
        })
    }

    fn activate(&self, run_id: &str) -> Result<(), LogError> {
        self.write(|tx| {
            let mut active = tx.open_table(ACTIVE).map_err(backend)?;
            if active.get(run_id).map_err(backend)?.is_none() {
                active.insert(run_id, 0).map_err(backend)?;
            }
            Ok(())
        })
    }

    fn reopen(&self, run_id: &str) -> Result<(), LogError> {
        self.write(|tx| {
            for table in [ENDED, ACTIVE] {
                tx.open_table(table)
                    .map_err(backend)?
                    .remove(run_id)
                    .map_err(backend)?;
            }
            tx.open_table(CANCEL)
                .map_err(backend)?
                .remove(run_id)
                .map_err(backend)?;
            tx.open_table(ACTIVE)
                .map_err(backend)?
                .insert(run_id, 0)
                .map_err(backend)?;
            Ok(())
        })
    }

    fn list(
        &self,
        account_id: &str,
        kind: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<String>, LogError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(LISTED).map_err(backend)?;
        let mut out = Vec::new();
        for r in t.range((account_id, kind, 0, "")..).map_err(backend)? {
            let (k, _) = r.map_err(backend)?;
            let (a, k, _, id) = k.value();
            if a != account_id || k != kind || out.len() == offset + limit {
                break;
            }
            out.push(id.to_string());
        }
        Ok(out.split_off(offset.min(out.len())))
    }

    fn orphans(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, LogError> {
        self.below(ACTIVE, now_ms, limit)
    }

    fn request_cancel(&self, run_id: &str, reason: &str) -> Result<(), LogError> {
        self.write(|tx| {
            tx.open_table(CANCEL)
                .map_err(backend)?
                .insert(run_id, reason)
                .map_err(backend)?;
            Ok(())
        })
    }

    fn cancel_requested(&self, run_id: &str) -> Result<Option<String>, LogError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(CANCEL).map_err(backend)?;
        let v = t.get(run_id).map_err(backend)?;
        Ok(v.map(|v| v.value().to_string()))
    }

    fn finished(&self, run_id: &str, at_ms: u64) -> Result<(), LogError> {
        self.write(|tx| {
            tx.open_table(ENDED)
                .map_err(backend)?
                .insert(run_id, at_ms)
                .map_err(backend)?;
            Ok(())
        })
    }

    fn ended_before(&self, before_ms: u64, limit: usize) -> Result<Vec<String>, LogError> {
        self.below(ENDED, before_ms, limit)
    }

    fn delete(&self, run_id: &str) -> Result<(), LogError> {
        self.write(|tx| {
            let meta: Option<RunMeta> = {
                let t = tx.open_table(META).map_err(backend)?;
                let v = t.get(run_id).map_err(backend)?;
                v.map(|v| decode(v.value())).transpose()?
            };
            if let Some(m) = &meta {
                if let Some(key) = m.scoped_idempotency_key() {
                    tx.open_table(IDEMPOTENCY)
                        .map_err(backend)?
                        .remove((m.account_id.as_str(), key.as_str()))
                        .map_err(backend)?;
                }
                tx.open_table(LISTED)
                    .map_err(backend)?
                    .remove(listed_key(m))
                    .map_err(backend)?;
            }
            let n = next_in(tx, run_id)?;
            let mut events = tx.open_table(EVENTS).map_err(backend)?;
            for s in 0..n {
                events.remove((run_id, s)).map_err(backend)?;
            }
            for table in [META, LEASES] {
                tx.open_table(table)
                    .map_err(backend)?
                    .remove(run_id)
                    .map_err(backend)?;
            }
            drop(events);
            for table in [ACTIVE, ENDED] {
                tx.open_table(table)
                    .map_err(backend)?
                    .remove(run_id)
                    .map_err(backend)?;
            }
            tx.open_table(CANCEL)
                .map_err(backend)?
                .remove(run_id)
                .map_err(backend)?;
            Ok(())
        })?;
        crate::locks::lock(&self.next).remove(run_id);
        Ok(())
    }
}
