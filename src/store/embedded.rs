//! The embedded [`Store`]: one redb file (`supernet.redb`) under `--data-dir`.
//!
//! Every operation is one redb write transaction, so it is atomic and durable when it
//! returns (redb commits with fsync); a crash or restart loses nothing committed. Records
//! are JSON values in redb tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `accounts` | account id | [`Account`] |
//! | `keys` | key id | [`StoredKey`] (record and secret hash) |
//! | `key_hashes` | SHA-256 of a secret | key id |
//! | `holds` | job id | [`Hold`] |
//! | `ledger` | seq | [`LedgerEntry`] |
//! | `account_ledger` | (account id, seq) | () |
//! | `earnings` | (worker id, seq of the settle entry) | [`Earning`] |
//! | `open_holds` | job id | lease end (unix seconds) |
//! | `meta` | `next_seq` | u64 |
//!
//! redb locks the file for one process; [`StoreError::InUse`] tells a second one so, and
//! `supernet admin` then goes through the running server (see [`crate::admin`]).

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use serde::{de::DeserializeOwned, Serialize};

use super::{
    apply, first_covered, key_hash, new_secret, non_negative, random_id, replays, Account,
    ApiKeyRecord, Balances, Earning, EntryKind, Hold, HoldOrder, LedgerEntry, NewKey, Store,
    StoreError, StoredKey, TokenType, HOLD_LEASE_SECS,
};
use crate::clock::unix_secs;
use crate::money::Amount;

const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const KEY_HASHES: TableDefinition<&str, &str> = TableDefinition::new("key_hashes");
const HOLDS: TableDefinition<&str, &[u8]> = TableDefinition::new("holds");
const LEDGER: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger");
const ACCOUNT_LEDGER: TableDefinition<(&str, u64), ()> = TableDefinition::new("account_ledger");
const EARNINGS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("earnings");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const OPEN_HOLDS: TableDefinition<&str, i64> = TableDefinition::new("open_holds");

/// The file name under the data dir.
pub const FILE: &str = "supernet.redb";

pub struct RedbStore {
    db: Database,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(backend)
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Backend(format!("corrupt record: {e}")))
}

impl RedbStore {
    /// Opens (or creates) the store in `data_dir`, creating the directory if needed.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Backend(format!("creating {}: {e}", data_dir.display())))?;
        let path = data_dir.join(FILE);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StoreError::InUse(path.display().to_string())
            }
            e => StoreError::Backend(format!("opening {}: {e}", path.display())),
        })?;
        let store = Self { db };
        store.write(|tx| {
            // Create every table so that readers never meet a missing one.
            tx.open_table(ACCOUNTS).map_err(backend)?;
            tx.open_table(KEYS).map_err(backend)?;
            tx.open_table(KEY_HASHES).map_err(backend)?;
            tx.open_table(HOLDS).map_err(backend)?;
            tx.open_table(LEDGER).map_err(backend)?;
            tx.open_table(ACCOUNT_LEDGER).map_err(backend)?;
            tx.open_table(EARNINGS).map_err(backend)?;
            tx.open_table(META).map_err(backend)?;
            tx.open_table(OPEN_HOLDS).map_err(backend)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs `f` in one write transaction, committed only if it succeeds.
    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.db.begin_write().map_err(backend)?;
        let out = f(&tx)?;
        tx.commit().map_err(backend)?;
        Ok(out)
    }

    fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(table).map_err(backend)?;
        let v = t.get(key).map_err(backend)?;
        v.map(|v| decode(v.value())).transpose()
    }
}

fn load<T: DeserializeOwned>(
    tx: &WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let t = tx.open_table(table).map_err(backend)?;
    let v = t.get(key).map_err(backend)?;
    v.map(|v| decode(v.value())).transpose()
}

fn save<T: Serialize>(
    tx: &WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    v: &T,
) -> Result<(), StoreError> {
    let mut t = tx.open_table(table).map_err(backend)?;
    t.insert(key, encode(v)?.as_slice()).map_err(backend)?;
    Ok(())
}

/// Appends a ledger entry and returns it.
fn append(
    tx: &WriteTransaction,
    account: &Account,
    kind: EntryKind,
    token: TokenType,
    amount: Amount,
    reference: &str,
) -> Result<LedgerEntry, StoreError> {
    let mut meta = tx.open_table(META).map_err(backend)?;
    let seq = meta
        .get("next_seq")
        .map_err(backend)?
        .map_or(0, |v| v.value());
    meta.insert("next_seq", seq + 1).map_err(backend)?;
    let entry = LedgerEntry {
        seq,
        account_id: account.id.clone(),
        kind,
        token_type: token,
        amount,
        reference: reference.to_string(),
        balance_after: account.balances.get(token),
        at: unix_secs(),
    };
    tx.open_table(LEDGER)
        .map_err(backend)?
        .insert(seq, encode(&entry)?.as_slice())
        .map_err(backend)?;
    tx.open_table(ACCOUNT_LEDGER)
        .map_err(backend)?
        .insert((account.id.as_str(), seq), ())
        .map_err(backend)?;
    Ok(entry)
}

fn account_in(tx: &WriteTransaction, id: &str) -> Result<Account, StoreError> {
    load(tx, ACCOUNTS, id)?.ok_or_else(|| StoreError::NoAccount(id.to_string()))
}

impl Store for RedbStore {
    fn create_account(&self, name: &str, opening: &Balances) -> Result<Account, StoreError> {
        non_negative(opening.spark)?;
        non_negative(opening.sogni)?;
        let id = random_id("acct_")?;
        self.write(|tx| {
            let mut acct = Account {
                id: id.clone(),
                name: name.to_string(),
                created: unix_secs(),
                balances: Balances {
                    spark: Amount::ZERO,
                    sogni: Amount::ZERO,
                },
            };
            for token in [TokenType::Spark, TokenType::Sogni] {
                let amount = opening.get(token);
                if amount != Amount::ZERO {
                    apply(&mut acct.balances, token, amount, false)?;
                    append(
                        tx,
                        &acct,
                        EntryKind::Credit,
                        token,
                        amount,
                        "opening balance",
                    )?;
                }
            }
            save(tx, ACCOUNTS, &id, &acct)?;
            Ok(acct)
        })
    }

    fn account(&self, id: &str) -> Result<Account, StoreError> {
        self.get(ACCOUNTS, id)?
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
        self.write(|tx| {
            let mut acct = account_in(tx, account_id)?;
            apply(&mut acct.balances, token, amount, false)?;
            save(tx, ACCOUNTS, account_id, &acct)?;
            append(tx, &acct, EntryKind::Credit, token, amount, reference)
        })
    }

    fn ledger(&self, account_id: &str, limit: usize) -> Result<Vec<LedgerEntry>, StoreError> {
        self.account(account_id)?;
        let tx = self.db.begin_read().map_err(backend)?;
        let index = tx.open_table(ACCOUNT_LEDGER).map_err(backend)?;
        let ledger = tx.open_table(LEDGER).map_err(backend)?;
        let mut out = Vec::new();
        for item in index
            .range((account_id, 0)..=(account_id, u64::MAX))
            .map_err(backend)?
            .rev()
            .take(limit)
        {
            let (k, _) = item.map_err(backend)?;
            let seq = k.value().1;
            let v = ledger
                .get(seq)
                .map_err(backend)?
                .ok_or_else(|| StoreError::Backend(format!("ledger entry {seq} is missing")))?;
            out.push(decode(v.value())?);
        }
        out.reverse();
        Ok(out)
    }

    fn hold_first(&self, order: &HoldOrder<'_>) -> Result<Hold, StoreError> {
        let HoldOrder {
            job_id,
            account_id,
            tenders,
            key,
            then,
        } = *order;
        if let Some(o) = then {
            return Err(StoreError::Backend(format!(
                "the embedded store cannot append to the bus stream {}",
                o.stream
            )));
        }
        self.write(|tx| {
            if let Some(h) = load::<Hold>(tx, HOLDS, job_id)? {
                replays(&h, account_id, tenders)?;
                return Ok(h);
            }
            if let Some(proof) = key {
                let stored = load::<StoredKey>(tx, KEYS, &proof.key_id)?;
                if !stored.is_some_and(|k| proof.holds_for(&k)) {
                    return Err(StoreError::KeyRevoked(proof.key_id.clone()));
                }
            }
            let mut acct = account_in(tx, account_id)?;
            let (token, amount) = first_covered(&acct.balances, tenders)?;
            apply(&mut acct.balances, token, amount, true)?;
            save(tx, ACCOUNTS, account_id, &acct)?;
            append(tx, &acct, EntryKind::Hold, token, amount, job_id)?;
            let h = Hold {
                job_id: job_id.to_string(),
                account_id: account_id.to_string(),
                token_type: token,
                amount,
                settled: None,
                worker_id: None,
            };
            save(tx, HOLDS, job_id, &h)?;
            tx.open_table(OPEN_HOLDS)
                .map_err(backend)?
                .insert(job_id, unix_secs() + HOLD_LEASE_SECS)
                .map_err(backend)?;
            Ok(h)
        })
    }

    fn settle(
        &self,
        job_id: &str,
        charged: Amount,
        worker_id: Option<&str>,
    ) -> Result<Hold, StoreError> {
        non_negative(charged)?;
        self.write(|tx| {
            let mut h: Hold =
                load(tx, HOLDS, job_id)?.ok_or_else(|| StoreError::NoHold(job_id.to_string()))?;
            if h.settled.is_some() {
                return Ok(h);
            }
            let rest = h
                .amount
                .checked_sub(charged)
                .filter(|r| !r.is_negative())
                .ok_or(StoreError::OverCharge {
                    charged,
                    held: h.amount,
                })?;
            let mut acct = account_in(tx, &h.account_id)?;
            // The charge was taken at hold time; the entry records it, the rest comes back.
            let entry = append(tx, &acct, EntryKind::Settle, h.token_type, charged, job_id)?;
            apply(&mut acct.balances, h.token_type, rest, false)?;
            save(tx, ACCOUNTS, &acct.id, &acct)?;
            append(tx, &acct, EntryKind::Release, h.token_type, rest, job_id)?;
            if let Some(worker_id) = worker_id.filter(|_| charged > Amount::ZERO) {
                let earning = Earning {
                    worker_id: worker_id.to_string(),
                    job_id: job_id.to_string(),
                    token_type: h.token_type,
                    amount: charged,
                    at: entry.at,
                };
                tx.open_table(EARNINGS)
                    .map_err(backend)?
                    .insert((worker_id, entry.seq), encode(&earning)?.as_slice())
                    .map_err(backend)?;
            }
            h.settled = Some(charged);
            h.worker_id = worker_id.map(str::to_string);
            save(tx, HOLDS, job_id, &h)?;
            tx.open_table(OPEN_HOLDS)
                .map_err(backend)?
                .remove(job_id)
                .map_err(backend)?;
            Ok(h)
        })
    }

    fn hold_of(&self, job_id: &str) -> Result<Hold, StoreError> {
        self.get(HOLDS, job_id)?
            .ok_or_else(|| StoreError::NoHold(job_id.to_string()))
    }

    fn renew_hold(&self, job_id: &str, expires_at: i64) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut open = tx.open_table(OPEN_HOLDS).map_err(backend)?;
            let is_open = open.get(job_id).map_err(backend)?.is_some();
            if is_open {
                open.insert(job_id, expires_at).map_err(backend)?;
            }
            Ok(())
        })
    }

    fn expired_holds(&self, now: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(OPEN_HOLDS).map_err(backend)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(backend)? {
            let (job, until) = item.map_err(backend)?;
            if until.value() < now && out.len() < limit {
                out.push(job.value().to_string());
            }
        }
        Ok(out)
    }

    fn earnings(&self, worker_id: &str, limit: usize) -> Result<Vec<Earning>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(EARNINGS).map_err(backend)?;
        let mut out = Vec::new();
        for item in t
            .range((worker_id, 0)..=(worker_id, u64::MAX))
            .map_err(backend)?
            .rev()
            .take(limit)
        {
            out.push(decode(item.map_err(backend)?.1.value())?);
        }
        out.reverse();
        Ok(out)
    }

    fn create_key(&self, account_id: &str) -> Result<NewKey, StoreError> {
        let key_id = random_id("key_")?;
        let (api_key, hash) = new_secret()?;
        self.write(|tx| {
            account_in(tx, account_id)?;
            let record = ApiKeyRecord {
                key_id: key_id.clone(),
                account_id: account_id.to_string(),
                created: unix_secs(),
                disabled: false,
            };
            save(
                tx,
                KEYS,
                &key_id,
                &StoredKey {
                    record,
                    hash: hash.clone(),
                },
            )?;
            tx.open_table(KEY_HASHES)
                .map_err(backend)?
                .insert(hash.as_str(), key_id.as_str())
                .map_err(backend)?;
            Ok(())
        })?;
        Ok(NewKey { key_id, api_key })
    }

    fn regenerate_key(&self, key_id: &str) -> Result<NewKey, StoreError> {
        let (api_key, hash) = new_secret()?;
        self.write(|tx| {
            let mut k: StoredKey =
                load(tx, KEYS, key_id)?.ok_or_else(|| StoreError::NoKey(key_id.to_string()))?;
            let mut hashes = tx.open_table(KEY_HASHES).map_err(backend)?;
            hashes.remove(k.hash.as_str()).map_err(backend)?;
            hashes.insert(hash.as_str(), key_id).map_err(backend)?;
            drop(hashes);
            k.hash = hash.clone();
            save(tx, KEYS, key_id, &k)
        })?;
        Ok(NewKey {
            key_id: key_id.to_string(),
            api_key,
        })
    }

    fn disable_key(&self, key_id: &str) -> Result<ApiKeyRecord, StoreError> {
        self.write(|tx| {
            let mut k: StoredKey =
                load(tx, KEYS, key_id)?.ok_or_else(|| StoreError::NoKey(key_id.to_string()))?;
            k.record.disabled = true;
            save(tx, KEYS, key_id, &k)?;
            Ok(k.record)
        })
    }

    fn authenticate(&self, api_key: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let hashes = tx.open_table(KEY_HASHES).map_err(backend)?;
        let Some(id) = hashes.get(key_hash(api_key).as_str()).map_err(backend)? else {
            return Ok(None);
        };
        let keys = tx.open_table(KEYS).map_err(backend)?;
        let Some(v) = keys.get(id.value()).map_err(backend)? else {
            return Ok(None);
        };
        let k: StoredKey = decode(v.value())?;
        Ok((!k.record.disabled).then_some(k.record))
    }
}
