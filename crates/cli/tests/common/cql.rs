//! A deterministic CQL data set for tests that back up a real Cassandra
//! cluster, damage it, restore it and compare, value by value.
//!
//! - `create_and_fill` makes a keyspace whose tables cover the CQL types
//!   (non-ASCII text, every number type with edge values and NaN/-0.0,
//!   uuid/timeuuid, time types, inet, empty and binary blobs, frozen and
//!   nested collections, a UDT also inside collections and tuples, static
//!   columns, composite partition keys, DESC clustering, counters, TTLs,
//!   nulls) and deletes rows, cells, collection elements, clustering ranges
//!   and partitions after writing them, so the SSTables hold tombstones.
//!   The same seed gives the same data. The returned `Dataset` is the model
//!   of what the tables must contain.
//! - `check_table` / `check_all` read everything back (paged, QUORUM) and
//!   compare with the model; the error names the table, primary key and
//!   column with expected and found values, and counts missing/extra rows.
//! - `write_more` adds rows (for incremental backups) and updates the model;
//!   `drop_table`, `truncate`, `delete_rows`, `overwrite_cell` damage.

mod plan;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use futures_util::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::unprepared::Statement;
use scylla::statement::Consistency;
use scylla::value::{CqlValue, Row};

use plan::{Clock, Planner, Script};
pub use plan::{EVENTS_PER_PARTITION, TTL_SECONDS};

/// The seed `create_and_fill` uses.
pub const DEFAULT_SEED: u64 = 0x7d1e_2026;

/// Statements in flight at once while filling.
const CONCURRENCY: usize = 32;

/// Rows per page when reading back.
const PAGE_SIZE: i32 = 500;

/// Keyspace replication.
#[derive(Debug, Clone)]
pub enum Replication {
    Simple(u32),
    /// NetworkTopologyStrategy with one data center.
    Network {
        datacenter: String,
        rf: u32,
    },
}

impl From<u32> for Replication {
    fn from(rf: u32) -> Replication {
        Replication::Simple(rf)
    }
}

impl Replication {
    fn cql(&self) -> String {
        match self {
            Replication::Simple(rf) => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}")
            }
            Replication::Network { datacenter, rf } => {
                format!("{{'class': 'NetworkTopologyStrategy', '{datacenter}': {rf}}}")
            }
        }
    }
}

/// One row the table must hold, values in `TableModel::columns` order.
#[derive(Debug, Clone)]
pub struct ExpectedRow {
    pub values: Vec<Option<CqlValue>>,
    /// Written with a TTL on the table's `ttl_column`: its TTL must be > 0.
    pub ttl: bool,
}

/// What one table must contain.
#[derive(Debug, Clone)]
pub struct TableModel {
    pub name: &'static str,
    /// Every column; the first `key_len` form the primary key.
    pub columns: &'static [&'static str],
    pub key_len: usize,
    pub ttl_column: Option<&'static str>,
    /// Keyed by `key_text` of the primary key.
    pub rows: BTreeMap<String, ExpectedRow>,
    /// The next generator index (rows, or partitions for `events`).
    pub next: u64,
}

/// The data set: keyspace, seed and the model of every table.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub keyspace: String,
    pub seed: u64,
    pub tables: BTreeMap<&'static str, TableModel>,
    clock: Clock,
}

impl Dataset {
    pub fn table(&self, name: &str) -> Result<&TableModel> {
        self.tables
            .get(name)
            .with_context(|| format!("no table {name} in the data set"))
    }

    /// Rows expected over all tables.
    pub fn row_count(&self) -> usize {
        self.tables.values().map(|t| t.rows.len()).sum()
    }
}

struct TableDef {
    name: &'static str,
    create: &'static str,
    columns: &'static [&'static str],
    key_len: usize,
    ttl_column: Option<&'static str>,
}

const TYPES: &[&str] =
    &["CREATE TYPE {ks}.address (street text, city text, zip int, tags frozen<set<text>>)"];

const TABLES: &[TableDef] = &[
    TableDef {
        name: "scalars",
        create: "CREATE TABLE {ks}.scalars (id int PRIMARY KEY, c_text text, c_ascii ascii, \
                 c_varchar varchar, c_int int, c_bigint bigint, c_smallint smallint, \
                 c_tinyint tinyint, c_varint varint, c_decimal decimal, c_float float, \
                 c_double double, c_boolean boolean, c_uuid uuid, c_timeuuid timeuuid, \
                 c_timestamp timestamp, c_date date, c_time time, c_duration duration, \
                 c_inet inet, c_blob blob)",
        columns: &[
            "id",
            "c_text",
            "c_ascii",
            "c_varchar",
            "c_int",
            "c_bigint",
            "c_smallint",
            "c_tinyint",
            "c_varint",
            "c_decimal",
            "c_float",
            "c_double",
            "c_boolean",
            "c_uuid",
            "c_timeuuid",
            "c_timestamp",
            "c_date",
            "c_time",
            "c_duration",
            "c_inet",
            "c_blob",
        ],
        key_len: 1,
        ttl_column: None,
    },
    TableDef {
        name: "collections",
        create: "CREATE TABLE {ks}.collections (id bigint PRIMARY KEY, l list<int>, \
                 s set<text>, m map<text, int>, fl frozen<list<text>>, fs frozen<set<bigint>>, \
                 fm frozen<map<int, text>>, nested map<text, frozen<list<frozen<set<int>>>>>, \
                 lm list<frozen<map<text, int>>>)",
        columns: &["id", "l", "s", "m", "fl", "fs", "fm", "nested", "lm"],
        key_len: 1,
        ttl_column: None,
    },
    TableDef {
        name: "people",
        create: "CREATE TABLE {ks}.people (id uuid PRIMARY KEY, name text, \
                 home frozen<address>, cur address, others list<frozen<address>>, \
                 by_name map<text, frozen<address>>, pos tuple<int, text, double>, \
                 nested tuple<int, frozen<list<text>>, frozen<address>>)",
        columns: &[
            "id", "name", "home", "cur", "others", "by_name", "pos", "nested",
        ],
        key_len: 1,
        ttl_column: None,
    },
    TableDef {
        name: "events",
        create: "CREATE TABLE {ks}.events (tenant text, day date, happened timestamp, \
                 seq int, label text static, payload blob, score double, note text, \
                 PRIMARY KEY ((tenant, day), happened, seq)) \
                 WITH CLUSTERING ORDER BY (happened DESC, seq ASC)",
        columns: &[
            "tenant", "day", "happened", "seq", "label", "payload", "score", "note",
        ],
        key_len: 4,
        ttl_column: None,
    },
    TableDef {
        name: "counters",
        create: "CREATE TABLE {ks}.counters (k text, bucket int, c1 counter, c2 counter, \
                 PRIMARY KEY (k, bucket))",
        columns: &["k", "bucket", "c1", "c2"],
        key_len: 2,
        ttl_column: None,
    },
    TableDef {
        name: "expiring",
        create: "CREATE TABLE {ks}.expiring (id int PRIMARY KEY, v text, n int)",
        columns: &["id", "v", "n"],
        key_len: 1,
        ttl_column: Some("v"),
    },
];

/// The names of the data set's tables.
pub fn table_names() -> Vec<&'static str> {
    TABLES.iter().map(|t| t.name).collect()
}

/// The model's key for a row: `col=value, ...` over the primary key.
pub fn key_text(columns: &[&str], key: &[Option<CqlValue>]) -> String {
    columns
        .iter()
        .zip(key)
        .map(|(c, v)| format!("{c}={}", show(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value as a person reads it in an error message.
pub fn show(v: &Option<CqlValue>) -> String {
    match v {
        None => "null".into(),
        Some(CqlValue::Text(s)) | Some(CqlValue::Ascii(s)) => format!("{s:?}"),
        Some(CqlValue::Int(i)) => i.to_string(),
        Some(CqlValue::BigInt(i)) => i.to_string(),
        Some(CqlValue::Uuid(u)) => u.to_string(),
        Some(CqlValue::Date(d)) => format!("date({})", i64::from(d.0) - (1i64 << 31)),
        Some(CqlValue::Timestamp(t)) => format!("timestamp({})", t.0),
        // NaNs (and zeros) differ only in their bits.
        Some(CqlValue::Float(f)) => format!("float({f:?}, bits {:#010x})", f.to_bits()),
        Some(CqlValue::Double(f)) => format!("double({f:?}, bits {:#018x})", f.to_bits()),
        Some(other) => format!("{other:?}"),
    }
}

/// Equality as a restore must keep it: floats by their bits (NaN equals
/// itself, -0.0 differs from 0.0), collections in order, UDT fields by name.
pub fn same(a: &CqlValue, b: &CqlValue) -> bool {
    use CqlValue::*;
    let opt = |x: &Option<CqlValue>, y: &Option<CqlValue>| match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => same(x, y),
        _ => false,
    };
    match (a, b) {
        (Float(x), Float(y)) => x.to_bits() == y.to_bits(),
        (Double(x), Double(y)) => x.to_bits() == y.to_bits(),
        (List(x), List(y)) | (Set(x), Set(y)) | (Vector(x), Vector(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Map(x), Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((xk, xv), (yk, yv))| same(xk, yk) && same(xv, yv))
        }
        (UserDefinedType { fields: x, .. }, UserDefinedType { fields: y, .. }) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((xn, xv), (yn, yv))| xn == yn && opt(xv, yv))
        }
        (Tuple(x), Tuple(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| opt(x, y)),
        _ => a == b,
    }
}

/// Creates keyspace `keyspace` (dropping an old one of that name) with the
/// data set's types and tables, and fills it with `scale` rows per table.
pub async fn create_and_fill(
    session: &Session,
    keyspace: &str,
    rf: impl Into<Replication>,
    scale: usize,
) -> Result<Dataset> {
    create_and_fill_seeded(session, keyspace, rf, scale, DEFAULT_SEED).await
}

pub async fn create_and_fill_seeded(
    session: &Session,
    keyspace: &str,
    rf: impl Into<Replication>,
    scale: usize,
    seed: u64,
) -> Result<Dataset> {
    let rf = rf.into();
    ddl(session, &format!("DROP KEYSPACE IF EXISTS {keyspace}")).await?;
    ddl(
        session,
        &format!("CREATE KEYSPACE {keyspace} WITH replication = {}", rf.cql()),
    )
    .await?;
    for t in TYPES {
        ddl(session, &t.replace("{ks}", keyspace)).await?;
    }
    let mut tables = BTreeMap::new();
    for t in TABLES {
        ddl(session, &t.create.replace("{ks}", keyspace)).await?;
        tables.insert(
            t.name,
            TableModel {
                name: t.name,
                columns: t.columns,
                key_len: t.key_len,
                ttl_column: t.ttl_column,
                rows: BTreeMap::new(),
                next: 0,
            },
        );
    }
    let mut ds = Dataset {
        keyspace: keyspace.to_string(),
        seed,
        tables,
        clock: Clock::default(),
    };
    write_more(session, &mut ds, scale).await?;
    Ok(ds)
}

/// Writes about `n` new rows into every table (`n` / EVENTS_PER_PARTITION
/// new partitions of `events`), including their updates and deletes, and
/// adds them to the model. `n` = 5% of the fill's scale suits incremental
/// backups.
pub async fn write_more(session: &Session, ds: &mut Dataset, n: usize) -> Result<()> {
    let mut planner = Planner {
        keyspace: ds.keyspace.clone(),
        seed: ds.seed,
        clock: ds.clock.clone(),
    };
    let mut scripts = Vec::new();
    for model in ds.tables.values_mut() {
        let count = if model.name == "events" {
            (n as u64).div_ceil(EVENTS_PER_PARTITION)
        } else {
            n as u64
        };
        let range = model.next..model.next + count;
        model.next = range.end;
        scripts.extend(planner.plan(model, range));
    }
    ds.clock = planner.clock;
    run(session, scripts)
        .await
        .with_context(|| format!("writing the data set into {}", ds.keyspace))
}

/// Prepares each distinct statement once, then runs the scripts
/// concurrently (each one's statements in order).
async fn run(session: &Session, scripts: Vec<Script>) -> Result<()> {
    let mut prepared: HashMap<Arc<str>, PreparedStatement> = HashMap::new();
    for op in scripts.iter().flatten() {
        if !prepared.contains_key(&op.cql) {
            let mut st = Statement::new(op.cql.to_string());
            st.set_consistency(Consistency::Quorum);
            let p = session
                .prepare(st)
                .await
                .with_context(|| format!("preparing {}", op.cql))?;
            prepared.insert(op.cql.clone(), p);
        }
    }
    let prepared = &prepared;
    futures_util::stream::iter(scripts)
        .map(|script| async move {
            for op in script {
                session
                    .execute_unpaged(&prepared[&op.cql], &op.values)
                    .await
                    .with_context(|| format!("{} with {:?}", op.cql, op.values))?;
            }
            anyhow::Ok(())
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn ddl(session: &Session, cql: &str) -> Result<()> {
    session
        .query_unpaged(cql, ())
        .await
        .with_context(|| format!("running {cql}"))?;
    session
        .await_schema_agreement()
        .await
        .with_context(|| format!("schema agreement after {cql}"))?;
    Ok(())
}

/// Checks every table of the data set; the error lists every table that
/// differs.
pub async fn check_all(session: &Session, ds: &Dataset) -> Result<()> {
    let mut failures = Vec::new();
    for name in ds.tables.keys() {
        if let Err(e) = check_table(session, &ds.keyspace, name, ds).await {
            failures.push(format!("{e:#}"));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Reads `ks.table` back and compares it with the model of `table` (the
/// keyspace may differ from the one the data set was written to, e.g. a
/// restore under another name).
pub async fn check_table(session: &Session, ks: &str, table: &str, ds: &Dataset) -> Result<()> {
    let model = ds.table(table)?;
    let mut select = model.columns.join(", ");
    if let Some(c) = model.ttl_column {
        write!(select, ", TTL({c})")?;
    }
    let mut st = Statement::new(format!("SELECT {select} FROM {ks}.{table}"));
    st.set_consistency(Consistency::Quorum);
    st.set_page_size(PAGE_SIZE);
    let mut rows = session
        .query_iter(st, ())
        .await
        .with_context(|| format!("reading {ks}.{table}"))?
        .rows_stream::<Row>()
        .with_context(|| format!("reading {ks}.{table}"))?;

    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    let mut extra = Vec::new();
    let (mut differing, mut read) = (0usize, 0usize);
    while let Some(row) = rows
        .try_next()
        .await
        .with_context(|| format!("reading {ks}.{table}"))?
    {
        read += 1;
        let cols = row.columns;
        let key = key_text(model.columns, &cols[..model.key_len]);
        let Some(want) = model.rows.get(&key) else {
            extra.push(key);
            continue;
        };
        seen.insert(key.clone(), ());
        let mut bad = false;
        for (n, name) in model.columns.iter().enumerate() {
            let ok = match (&want.values[n], &cols[n]) {
                (None, None) => true,
                (Some(a), Some(b)) => same(a, b),
                _ => false,
            };
            if !ok {
                bad = true;
                problems.push(format!(
                    "  ({key}) column {name}: expected {}, found {}",
                    show(&want.values[n]),
                    show(&cols[n])
                ));
            }
        }
        if let Some(c) = model.ttl_column {
            let ttl = &cols[model.columns.len()];
            let ok = match ttl {
                Some(CqlValue::Int(t)) => want.ttl && *t > 0 && *t <= TTL_SECONDS,
                None => !want.ttl,
                _ => false,
            };
            if !ok {
                bad = true;
                let wanted = if want.ttl {
                    format!("a TTL in 1..={TTL_SECONDS}")
                } else {
                    "no TTL".to_string()
                };
                problems.push(format!(
                    "  ({key}) column {c}: expected {wanted}, found TTL {}",
                    show(ttl)
                ));
            }
        }
        differing += usize::from(bad);
    }
    let missing: Vec<&String> = model
        .rows
        .keys()
        .filter(|k| !seen.contains_key(*k))
        .collect();
    if problems.is_empty() && missing.is_empty() && extra.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "table {ks}.{table}: {differing} rows differ, {} missing, {} extra \
         ({read} read, {} expected)",
        missing.len(),
        extra.len(),
        model.rows.len()
    );
    const SHOWN: usize = 10;
    for p in problems.iter().take(SHOWN) {
        write!(msg, "\n{p}")?;
    }
    for k in missing.iter().take(SHOWN) {
        write!(msg, "\n  missing row ({k})")?;
    }
    for k in extra.iter().take(SHOWN) {
        write!(msg, "\n  extra row ({k})")?;
    }
    bail!(msg)
}

/// Damage: drops one table.
pub async fn drop_table(session: &Session, ks: &str, table: &str) -> Result<()> {
    ddl(session, &format!("DROP TABLE {ks}.{table}")).await
}

/// Damage: removes every row of one table.
pub async fn truncate(session: &Session, ks: &str, table: &str) -> Result<()> {
    let mut st = Statement::new(format!("TRUNCATE {ks}.{table}"));
    st.set_consistency(Consistency::All);
    session
        .query_unpaged(st, ())
        .await
        .with_context(|| format!("truncating {ks}.{table}"))?;
    Ok(())
}

/// Damage: deletes `n` rows of `table` spread over the model (the model is
/// left as it was: it is what a restore must bring back). Returns their keys.
pub async fn delete_rows(
    session: &Session,
    ds: &Dataset,
    table: &str,
    n: usize,
) -> Result<Vec<String>> {
    let model = ds.table(table)?;
    // Rows whose clustering columns are null are static-only: no row to delete.
    let candidates: Vec<(&String, &ExpectedRow)> = model
        .rows
        .iter()
        .filter(|(_, r)| r.values[..model.key_len].iter().all(Option::is_some))
        .collect();
    ensure!(!candidates.is_empty(), "{table} has no row to delete");
    let step = (candidates.len() / n.max(1)).max(1);
    let wheres: Vec<String> = model.columns[..model.key_len]
        .iter()
        .map(|c| format!("{c} = ?"))
        .collect();
    let mut st = Statement::new(format!(
        "DELETE FROM {}.{table} WHERE {}",
        ds.keyspace,
        wheres.join(" AND ")
    ));
    st.set_consistency(Consistency::Quorum);
    let prepared = session.prepare(st).await?;
    let mut deleted = Vec::new();
    for (key, row) in candidates.into_iter().step_by(step).take(n) {
        session
            .execute_unpaged(&prepared, &row.values[..model.key_len])
            .await
            .with_context(|| format!("deleting ({key}) from {table}"))?;
        deleted.push(key.clone());
    }
    Ok(deleted)
}

/// Damage: overwrites `column` of the `nth` expected row of `table` with
/// `value` (the model keeps the old value). Returns the row's key.
pub async fn overwrite_cell(
    session: &Session,
    ds: &Dataset,
    table: &str,
    nth: usize,
    column: &str,
    value: CqlValue,
) -> Result<String> {
    let model = ds.table(table)?;
    let (key, row) = model
        .rows
        .iter()
        .filter(|(_, r)| r.values[..model.key_len].iter().all(Option::is_some))
        .nth(nth)
        .with_context(|| format!("{table} has no row {nth}"))?;
    let wheres: Vec<String> = model.columns[..model.key_len]
        .iter()
        .map(|c| format!("{c} = ?"))
        .collect();
    let mut st = Statement::new(format!(
        "UPDATE {}.{table} SET {column} = ? WHERE {}",
        ds.keyspace,
        wheres.join(" AND ")
    ));
    st.set_consistency(Consistency::Quorum);
    let prepared = session.prepare(st).await?;
    let mut values = vec![Some(value)];
    values.extend(row.values[..model.key_len].iter().cloned());
    session
        .execute_unpaged(&prepared, &values)
        .await
        .with_context(|| format!("overwriting {column} of ({key}) in {table}"))?;
    Ok(key.clone())
}
