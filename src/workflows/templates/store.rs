//! Where saved workflow templates live: [`TemplateStore`], one interface with a redb file
//! beside the ledger for `supernet serve` ([`RedbTemplates`]) and Redis for a cluster
//! ([`RedisTemplates`]), and one conformance suite. A template is stored whole (its JSON)
//! with who owns it and whether every account may read it; ids are global.

use std::path::Path;
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition};
use redis::{Commands, Script};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::redis_pool::Pool;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub id: String,
    /// The account that owns it.
    pub owner: String,
    pub public: bool,
    pub created_ms: u64,
    /// The template as the routes show it.
    pub body: Value,
}

impl Stored {
    fn version(&self) -> &str {
        self.body["version"].as_str().unwrap_or_default()
    }
}

/// Which templates a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visible {
    Own,
    Public,
    /// Own and public.
    All,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("a template `{0}` exists")]
    Exists(String),
    /// It changed since it was read (another patch won).
    #[error("template `{0}` changed meanwhile")]
    Changed(String),
    #[error("the template store failed: {0}")]
    Backend(String),
}

fn backend(e: impl std::fmt::Display) -> TemplateError {
    TemplateError::Backend(e.to_string())
}

pub trait TemplateStore: Send + Sync {
    fn get(&self, id: &str) -> Result<Option<Stored>, TemplateError>;
    /// Saves a new template; [`TemplateError::Exists`] when its id is taken.
    fn insert(&self, t: &Stored) -> Result<(), TemplateError>;
    /// Replaces the template if it is still at `version`.
    fn replace(&self, t: &Stored, version: &str) -> Result<(), TemplateError>;
    /// Deletes it; false when there was none.
    fn delete(&self, id: &str) -> Result<bool, TemplateError>;
    /// The templates `account` sees under `visible`, newest first: up to `limit` after
    /// `offset`.
    fn list(
        &self,
        account: &str,
        visible: Visible,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Stored>, TemplateError>;
}

const TEMPLATES: TableDefinition<&str, &[u8]> = TableDefinition::new("templates");
/// (`u64::MAX` - created ms, id): every template, newest first.
const NEWEST: TableDefinition<(u64, &str), ()> = TableDefinition::new("templates_newest");

pub struct RedbTemplates {
    db: Database,
}

impl RedbTemplates {
    pub fn open(data_dir: &Path) -> Result<Self, TemplateError> {
        std::fs::create_dir_all(data_dir).map_err(backend)?;
        let db = Database::create(data_dir.join("templates.redb")).map_err(backend)?;
        let tx = db.begin_write().map_err(backend)?;
        tx.open_table(TEMPLATES).map_err(backend)?;
        tx.open_table(NEWEST).map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(Self { db })
    }

    fn write(&self, t: &Stored, expect: Option<&str>) -> Result<(), TemplateError> {
        let tx = self.db.begin_write().map_err(backend)?;
        {
            let mut table = tx.open_table(TEMPLATES).map_err(backend)?;
            let current: Option<Stored> = table
                .get(t.id.as_str())
                .map_err(backend)?
                .map(|v| serde_json::from_slice(v.value()).map_err(backend))
                .transpose()?;
            match (expect, &current) {
                (None, Some(_)) => return Err(TemplateError::Exists(t.id.clone())),
                (Some(v), Some(c)) if c.version() == v => {}
                (Some(_), _) => return Err(TemplateError::Changed(t.id.clone())),
                (None, None) => {}
            }
            let bytes = serde_json::to_vec(t).map_err(backend)?;
            table
                .insert(t.id.as_str(), bytes.as_slice())
                .map_err(backend)?;
            tx.open_table(NEWEST)
                .map_err(backend)?
                .insert((u64::MAX - t.created_ms, t.id.as_str()), ())
                .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }
}

fn shown(t: &Stored, account: &str, visible: Visible) -> bool {
    match visible {
        Visible::Own => t.owner == account,
        Visible::Public => t.public,
        Visible::All => t.owner == account || t.public,
    }
}

impl TemplateStore for RedbTemplates {
    fn get(&self, id: &str) -> Result<Option<Stored>, TemplateError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(TEMPLATES).map_err(backend)?;
        let v = t.get(id).map_err(backend)?;
        v.map(|v| serde_json::from_slice(v.value()).map_err(backend))
            .transpose()
    }

    fn insert(&self, t: &Stored) -> Result<(), TemplateError> {
        self.write(t, None)
    }

    fn replace(&self, t: &Stored, version: &str) -> Result<(), TemplateError> {
        self.write(t, Some(version))
    }

    fn delete(&self, id: &str) -> Result<bool, TemplateError> {
        let Some(t) = self.get(id)? else {
            return Ok(false);
        };
        let tx = self.db.begin_write().map_err(backend)?;
        tx.open_table(TEMPLATES)
            .map_err(backend)?
            .remove(id)
            .map_err(backend)?;
        tx.open_table(NEWEST)
            .map_err(backend)?
            .remove((u64::MAX - t.created_ms, id))
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(true)
    }

    fn list(
        &self,
        account: &str,
        visible: Visible,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Stored>, TemplateError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let newest = tx.open_table(NEWEST).map_err(backend)?;
        let all = tx.open_table(TEMPLATES).map_err(backend)?;
        let mut out = Vec::new();
        for r in newest.iter().map_err(backend)? {
            let (k, _) = r.map_err(backend)?;
            let Some(v) = all.get(k.value().1).map_err(backend)? else {
                continue;
            };
            let t: Stored = serde_json::from_slice(v.value()).map_err(backend)?;
            if shown(&t, account, visible) {
                out.push(t);
                if out.len() == offset + limit {
                    break;
                }
            }
        }
        Ok(out.split_off(offset.min(out.len())))
    }
}

/// `sn:v1:tpl:{id}` the template (JSON); `sn:v1:tpls:own:{account}` and `sn:v1:tpls:public`
/// sorted sets of ids scored by creation.
pub struct RedisTemplates {
    pool: Pool,
    write: Script,
}

const PUBLIC: &str = "sn:v1:tpls:public";

fn tpl_key(id: &str) -> String {
    format!("sn:v1:tpl:{id}")
}

fn own_key(account: &str) -> String {
    format!("sn:v1:tpls:own:{account}")
}

/// KEYS: template, own set, public set. ARGV: JSON, expected version ("" to insert), id,
/// created, public ("1"/"0"). Returns "ok", "exists" or "changed".
const WRITE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if ARGV[2] == '' then
  if cur then return 'exists' end
else
  if not cur or cjson.decode(cur).body.version ~= ARGV[2] then return 'changed' end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
if ARGV[5] == '1' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3]) else redis.call('ZREM', KEYS[3], ARGV[3]) end
return 'ok'
"#;

impl RedisTemplates {
    pub fn connect(url: &str) -> Result<Self, TemplateError> {
        Ok(Self {
            pool: Pool::new(url, Duration::from_secs(3)).map_err(backend)?,
            write: Script::new(WRITE),
        })
    }

    fn write(&self, t: &Stored, expect: &str) -> Result<(), TemplateError> {
        let json = serde_json::to_string(t).map_err(backend)?;
        let r: String = self
            .pool
            .with(|c| {
                self.write
                    .key(tpl_key(&t.id))
                    .key(own_key(&t.owner))
                    .key(PUBLIC)
                    .arg(json)
                    .arg(expect)
                    .arg(&t.id)
                    .arg(t.created_ms)
                    .arg(if t.public { "1" } else { "0" })
                    .invoke(c)
            })
            .map_err(backend)?;
        match r.as_str() {
            "ok" => Ok(()),
            "exists" => Err(TemplateError::Exists(t.id.clone())),
            _ => Err(TemplateError::Changed(t.id.clone())),
        }
    }

    fn ids(&self, key: &str) -> Result<Vec<(String, f64)>, TemplateError> {
        self.pool
            .with(|c| c.zrevrange_withscores(key, 0, -1))
            .map_err(backend)
    }
}

impl TemplateStore for RedisTemplates {
    fn get(&self, id: &str) -> Result<Option<Stored>, TemplateError> {
        let raw: Option<String> = self.pool.with(|c| c.get(tpl_key(id))).map_err(backend)?;
        raw.map(|s| serde_json::from_str(&s).map_err(backend))
            .transpose()
    }

    fn insert(&self, t: &Stored) -> Result<(), TemplateError> {
        self.write(t, "")
    }

    fn replace(&self, t: &Stored, version: &str) -> Result<(), TemplateError> {
        self.write(t, version)
    }

    fn delete(&self, id: &str) -> Result<bool, TemplateError> {
        let Some(t) = self.get(id)? else {
            return Ok(false);
        };
        self.pool
            .with(|c| {
                redis::pipe()
                    .atomic()
                    .del(tpl_key(id))
                    .zrem(own_key(&t.owner), id)
                    .zrem(PUBLIC, id)
                    .query::<()>(c)
            })
            .map_err(backend)?;
        Ok(true)
    }

    fn list(
        &self,
        account: &str,
        visible: Visible,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Stored>, TemplateError> {
        let mut ids = match visible {
            Visible::Own => self.ids(&own_key(account))?,
            Visible::Public => self.ids(PUBLIC)?,
            Visible::All => {
                let mut ids = self.ids(&own_key(account))?;
                ids.extend(self.ids(PUBLIC)?);
                ids
            }
        };
        ids.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ids.dedup_by(|a, b| a.0 == b.0);
        let mut out = Vec::new();
        for (id, _) in ids.into_iter().skip(offset).take(limit) {
            if let Some(t) = self.get(&id)? {
                out.push(t);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod conformance {
    use super::*;
    use serde_json::json;

    fn template(id: &str, owner: &str, public: bool, at: u64) -> Stored {
        Stored {
            id: id.into(),
            owner: owner.into(),
            public,
            created_ms: at,
            body: json!({"id": id, "version": "0.0.1"}),
        }
    }

    fn run(s: &dyn TemplateStore) {
        s.insert(&template("a", "me", false, 1)).unwrap();
        s.insert(&template("b", "you", true, 2)).unwrap();
        s.insert(&template("c", "you", false, 3)).unwrap();
        s.insert(&template("d", "me", true, 4)).unwrap();
        assert!(matches!(
            s.insert(&template("a", "you", false, 5)),
            Err(TemplateError::Exists(_))
        ));
        let ids = |v: Visible, offset, limit| -> Vec<String> {
            s.list("me", v, offset, limit)
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect()
        };
        assert_eq!(ids(Visible::Own, 0, 10), ["d", "a"]);
        assert_eq!(ids(Visible::Public, 0, 10), ["d", "b"]);
        assert_eq!(ids(Visible::All, 0, 10), ["d", "b", "a"]);
        assert_eq!(ids(Visible::All, 1, 1), ["b"]);
        // A patch applies to the version it read, once.
        let mut a = template("a", "me", true, 1);
        a.body["version"] = json!("0.0.2");
        s.replace(&a, "0.0.1").unwrap();
        assert!(matches!(
            s.replace(&a, "0.0.1"),
            Err(TemplateError::Changed(_))
        ));
        assert_eq!(s.get("a").unwrap(), Some(a));
        assert_eq!(ids(Visible::Public, 0, 10), ["d", "b", "a"]);
        assert!(s.delete("a").unwrap());
        assert!(!s.delete("a").unwrap());
        assert_eq!(s.get("a").unwrap(), None);
        assert_eq!(ids(Visible::All, 0, 10), ["d", "b"]);
    }

    #[test]
    fn the_embedded_template_store_conforms() {
        let dir = tempfile::tempdir().expect("a temp dir");
        run(&RedbTemplates::open(dir.path()).expect("open"));
    }

    #[test]
    fn the_redis_template_store_conforms() {
        let server = crate::test_redis::TestRedis::start();
        run(&RedisTemplates::connect(&server.url).expect("connect"));
    }
}
