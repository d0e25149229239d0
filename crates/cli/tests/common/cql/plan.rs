//! The deterministic writes of the data set: for every table, a pure
//! function that turns generator indices into scripts (statements run in
//! order, one script per row or partition) and applies the same effects to
//! the expected-rows model. Nothing here talks to Cassandra.
//!
//! Every write carries an explicit `USING TIMESTAMP` from one strictly
//! increasing clock, so an insert and the update or delete that follows it
//! never tie (a tie would be settled by comparing values, not by order).
//! Counters cannot take a timestamp; their scripts run in order anyway.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use scylla::value::{
    Counter, CqlDate, CqlDecimal, CqlDuration, CqlTime, CqlTimestamp, CqlTimeuuid, CqlValue,
    CqlVarint,
};

use super::{key_text, ExpectedRow, TableModel};

pub type Values = Vec<Option<CqlValue>>;

/// One statement of a script.
pub struct Op {
    pub cql: Arc<str>,
    pub values: Values,
}

/// Statements that must run in this order (one row or partition).
pub type Script = Vec<Op>;

/// TTL of the expiring rows: long enough to outlive any test.
pub const TTL_SECONDS: i32 = 86_400;

/// Rows per partition of the `events` table.
pub const EVENTS_PER_PARTITION: u64 = 8;

/// Microsecond write timestamps: at least the wall clock, always increasing.
#[derive(Debug, Clone, Default)]
pub struct Clock(i64);

impl Clock {
    pub fn tick(&mut self) -> CqlValue {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        self.0 = now.max(self.0 + 1);
        CqlValue::BigInt(self.0)
    }
}

/// splitmix64: tiny, fast, and the same sequence on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn for_row(seed: u64, table: &str, i: u64) -> Rng {
        let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
        for b in table.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Rng(h ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03))
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo) as u64) as i64
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// Words with accents, CJK, right-to-left scripts, emoji (also joined
    /// sequences), combining marks, control characters and a NUL.
    fn text(&mut self) -> String {
        const WORDS: &[&str] = &[
            "alpha",
            "Zürich",
            "école",
            "Straße",
            "naïve café",
            "日本語のテキスト",
            "中文字符",
            "한국어",
            "Ωμέγα",
            "Кириллица",
            "العربية",
            "עברית",
            "🦀",
            "👩\u{200d}👩\u{200d}👧\u{200d}👦",
            "e\u{301}",
            "tab\there",
            "line\nbreak",
            "quote ' and \"",
            "nul\u{0}byte",
            "  padded  ",
            "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        ];
        let n = 1 + self.below(4);
        (0..n)
            .map(|_| *self.pick(WORDS))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn ascii(&mut self) -> String {
        let n = self.below(30);
        (0..n)
            .map(|_| char::from(0x20 + self.below(0x5f) as u8))
            .collect()
    }

    fn uuid_v4(&mut self) -> uuid::Uuid {
        let mut b: [u8; 16] = self.bytes(16).try_into().expect("16 bytes");
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        uuid::Uuid::from_bytes(b)
    }

    /// Cassandra checks that a timeuuid is version 1.
    fn timeuuid(&mut self) -> CqlValue {
        let mut b: [u8; 16] = self.bytes(16).try_into().expect("16 bytes");
        b[6] = (b[6] & 0x0f) | 0x10;
        b[8] = (b[8] & 0x3f) | 0x80;
        CqlValue::Timeuuid(CqlTimeuuid::from(uuid::Uuid::from_bytes(b)))
    }

    /// Big-endian two's complement in its shortest form, as Cassandra's
    /// BigInteger encoding writes it.
    fn varint_bytes(&mut self, max_len: u64) -> Vec<u8> {
        let len = 1 + self.below(max_len) as usize;
        let mut b = self.bytes(len);
        while b.len() > 1 && ((b[0] == 0 && b[1] & 0x80 == 0) || (b[0] == 0xff && b[1] & 0x80 != 0))
        {
            b.remove(0);
        }
        b
    }

    fn float(&mut self, i: u64) -> f32 {
        const SPECIAL: &[f32] = &[
            f32::NAN,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            f32::MAX,
            1.0e-45, // smallest subnormal
        ];
        match SPECIAL.get((i % 13) as usize) {
            Some(f) => *f,
            None => f32::from_bits(self.next() as u32),
        }
    }

    fn double(&mut self, i: u64) -> f64 {
        const SPECIAL: &[f64] = &[
            f64::NAN,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
            5.0e-324,
            0.1,
        ];
        match SPECIAL.get((i % 17) as usize) {
            Some(f) => *f,
            None => f64::from_bits(self.next()),
        }
    }

    fn duration(&mut self) -> CqlDuration {
        // Cassandra requires the three parts to share one sign.
        let sign = if self.below(2) == 0 { 1 } else { -1 };
        CqlDuration {
            months: sign * self.below(1000) as i32,
            days: sign * self.below(10_000) as i32,
            nanoseconds: i64::from(sign) * self.below(1_000_000_000_000_000) as i64,
        }
    }

    fn inet(&mut self) -> IpAddr {
        if self.below(2) == 0 {
            IpAddr::V4(Ipv4Addr::from(self.next() as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(
                u128::from(self.next()) << 64 | u128::from(self.next()),
            ))
        }
    }
}

/// What planning needs besides the table's model.
pub struct Planner {
    pub keyspace: String,
    pub seed: u64,
    pub clock: Clock,
}

fn text(s: impl Into<String>) -> Option<CqlValue> {
    Some(CqlValue::Text(s.into()))
}

fn int(v: i32) -> Option<CqlValue> {
    Some(CqlValue::Int(v))
}

fn op(cql: &Arc<str>, values: Values) -> Op {
    Op {
        cql: cql.clone(),
        values,
    }
}

/// Set elements in the order Cassandra returns them: for the element types
/// used here (int, bigint, text) that is numeric order or UTF-8 byte order.
fn cql_sort(values: &mut Vec<CqlValue>) {
    values.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    values.dedup_by(|a, b| sort_key(a) == sort_key(b));
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum SortKey<'a> {
    Num(i64),
    Bytes(&'a [u8]),
}

fn sort_key(v: &CqlValue) -> SortKey<'_> {
    match v {
        CqlValue::Int(i) => SortKey::Num(i64::from(*i)),
        CqlValue::BigInt(i) => SortKey::Num(*i),
        CqlValue::Text(s) | CqlValue::Ascii(s) => SortKey::Bytes(s.as_bytes()),
        other => panic!("no sort order modelled for set element {other:?}"),
    }
}

fn set(mut values: Vec<CqlValue>) -> CqlValue {
    cql_sort(&mut values);
    CqlValue::Set(values)
}

/// A map from pairs; later pairs replace earlier ones with the same key.
fn map(pairs: Vec<(CqlValue, CqlValue)>) -> CqlValue {
    let mut out: Vec<(CqlValue, CqlValue)> = Vec::new();
    for (k, v) in pairs {
        out.retain(|(ek, _)| sort_key(ek) != sort_key(&k));
        out.push((k, v));
    }
    out.sort_by(|a, b| sort_key(&a.0).cmp(&sort_key(&b.0)));
    CqlValue::Map(out)
}

/// A non-frozen collection without elements reads back as null.
fn non_frozen(v: CqlValue) -> Option<CqlValue> {
    match &v {
        CqlValue::List(x) | CqlValue::Set(x) if x.is_empty() => None,
        CqlValue::Map(x) if x.is_empty() => None,
        _ => Some(v),
    }
}

fn put(model: &mut TableModel, values: Values, ttl: bool) {
    let key = key_text(model.columns, &values[..model.key_len]);
    model.rows.insert(key, ExpectedRow { values, ttl });
}

fn get_mut<'a>(model: &'a mut TableModel, key: &[Option<CqlValue>]) -> &'a mut ExpectedRow {
    let k = key_text(model.columns, key);
    model
        .rows
        .get_mut(&k)
        .expect("planned row exists in the model")
}

fn remove(model: &mut TableModel, key: &[Option<CqlValue>]) {
    let k = key_text(model.columns, key);
    model.rows.remove(&k);
}

fn col(model: &TableModel, name: &str) -> usize {
    model
        .columns
        .iter()
        .position(|c| *c == name)
        .expect("known column")
}

impl Planner {
    fn cql(&self, template: &str) -> Arc<str> {
        template.replace("{ks}", &self.keyspace).into()
    }

    fn rng(&self, table: &str, i: u64) -> Rng {
        Rng::for_row(self.seed, table, i)
    }

    /// Plans rows `range` of `model`'s table.
    pub fn plan(&mut self, model: &mut TableModel, range: Range<u64>) -> Vec<Script> {
        let mut scripts = Vec::new();
        for i in range {
            let script = match model.name {
                "scalars" => self.scalars(model, i),
                "collections" => self.collections(model, i),
                "people" => self.people(model, i),
                "events" => self.events(model, i),
                "counters" => self.counters(model, i),
                "expiring" => self.expiring(model, i),
                other => panic!("no planner for table {other}"),
            };
            scripts.push(script);
        }
        scripts
    }

    fn scalars(&mut self, m: &mut TableModel, i: u64) -> Script {
        let mut r = self.rng("scalars", i);
        let id = int(i as i32 - 50);
        let edge_i32 = [i32::MIN, i32::MAX, 0, -1];
        let edge_i64 = [i64::MIN, i64::MAX, 0, -1];
        let mut v: Values = vec![
            id.clone(),
            text(r.text()),
            Some(CqlValue::Ascii(r.ascii())),
            text(if i % 17 == 0 { String::new() } else { r.text() }),
            int(*edge_i32
                .get((i % 11) as usize)
                .unwrap_or(&(r.next() as i32))),
            Some(CqlValue::BigInt(
                *edge_i64
                    .get((i % 11) as usize)
                    .unwrap_or(&(r.next() as i64)),
            )),
            Some(CqlValue::SmallInt(r.next() as i16)),
            Some(CqlValue::TinyInt(r.next() as i8)),
            Some(CqlValue::Varint(CqlVarint::from_signed_bytes_be(
                r.varint_bytes(24),
            ))),
            Some(CqlValue::Decimal(
                CqlDecimal::from_signed_be_bytes_and_exponent(
                    r.varint_bytes(12),
                    r.range_i64(-10, 20) as i32,
                ),
            )),
            Some(CqlValue::Float(r.float(i))),
            Some(CqlValue::Double(r.double(i))),
            Some(CqlValue::Boolean(r.below(2) == 0)),
            Some(CqlValue::Uuid(r.uuid_v4())),
            Some(r.timeuuid()),
            Some(CqlValue::Timestamp(CqlTimestamp(
                r.range_i64(-(1 << 41), 1 << 42),
            ))),
            Some(CqlValue::Date(CqlDate(
                (1u32 << 31).wrapping_add_signed(r.range_i64(-800_000, 800_000) as i32),
            ))),
            Some(CqlValue::Time(CqlTime(r.below(86_400_000_000_000) as i64))),
            Some(CqlValue::Duration(r.duration())),
            Some(CqlValue::Inet(r.inet())),
            Some(CqlValue::Blob(match i % 19 {
                0 => Vec::new(),
                1 => (0..=255u8).collect(),
                _ => {
                    let n = r.below(200) as usize;
                    r.bytes(n)
                }
            })),
        ];
        if i % 7 == 0 {
            // Explicit nulls: written as cell tombstones.
            for c in ["c_text", "c_double", "c_uuid", "c_inet"] {
                v[col(m, c)] = None;
            }
        }
        let mut script = Vec::new();
        if i % 13 == 0 {
            // Columns never written at all.
            let cql = self.cql(
                "INSERT INTO {ks}.scalars (id, c_int, c_blob) VALUES (?, ?, ?) USING TIMESTAMP ?",
            );
            let (ci, cb) = (col(m, "c_int"), col(m, "c_blob"));
            script.push(op(
                &cql,
                vec![
                    id.clone(),
                    v[ci].clone(),
                    v[cb].clone(),
                    Some(self.clock.tick()),
                ],
            ));
            v = v
                .iter()
                .enumerate()
                .map(|(n, x)| {
                    if n == 0 || n == ci || n == cb {
                        x.clone()
                    } else {
                        None
                    }
                })
                .collect();
        } else {
            let cols = m.columns.join(", ");
            let marks = vec!["?"; m.columns.len()].join(", ");
            let cql = self.cql(&format!(
                "INSERT INTO {{ks}}.scalars ({cols}) VALUES ({marks}) USING TIMESTAMP ?"
            ));
            let mut values = v.clone();
            values.push(Some(self.clock.tick()));
            script.push(op(&cql, values));
        }
        put(m, v, false);
        let key = [id.clone()];
        match i % 10 {
            3 => {
                let cql = self.cql("DELETE FROM {ks}.scalars USING TIMESTAMP ? WHERE id = ?");
                script.push(op(&cql, vec![Some(self.clock.tick()), id]));
                remove(m, &key);
            }
            5 => {
                let cql = self
                    .cql("DELETE c_text, c_blob FROM {ks}.scalars USING TIMESTAMP ? WHERE id = ?");
                script.push(op(&cql, vec![Some(self.clock.tick()), id]));
                let (ct, cb) = (col(m, "c_text"), col(m, "c_blob"));
                let row = get_mut(m, &key);
                row.values[ct] = None;
                row.values[cb] = None;
            }
            8 => {
                let (new_int, new_text) = (r.next() as i32, r.text());
                let cql = self.cql(
                    "UPDATE {ks}.scalars USING TIMESTAMP ? SET c_int = ?, c_text = ? WHERE id = ?",
                );
                script.push(op(
                    &cql,
                    vec![Some(self.clock.tick()), int(new_int), text(&new_text), id],
                ));
                let (ci, ct) = (col(m, "c_int"), col(m, "c_text"));
                let row = get_mut(m, &key);
                row.values[ci] = int(new_int);
                row.values[ct] = text(new_text);
            }
            _ => {}
        }
        script
    }

    fn collections(&mut self, m: &mut TableModel, i: u64) -> Script {
        let mut r = self.rng("collections", i);
        let id = Some(CqlValue::BigInt(i as i64 * 1_000_003 - 7));
        let small = |r: &mut Rng| CqlValue::Int(r.below(20) as i32 - 10);
        let word = |r: &mut Rng| CqlValue::Text(r.text());
        let l: Vec<CqlValue> = (0..r.below(7)).map(|_| small(&mut r)).collect();
        let s = set((0..r.below(6)).map(|_| word(&mut r)).collect());
        let mp = map((0..r.below(5))
            .map(|_| (word(&mut r), CqlValue::Int(r.next() as i32)))
            .collect());
        // Frozen collections keep an empty value as a value, not a null.
        let fl = CqlValue::List((0..r.below(5)).map(|_| word(&mut r)).collect());
        let fs = set((0..r.below(5))
            .map(|_| CqlValue::BigInt(r.next() as i64))
            .collect());
        let fm = map((0..r.below(4))
            .map(|_| (CqlValue::Int(r.next() as i32), word(&mut r)))
            .collect());
        let nested = map((0..r.below(4))
            .map(|_| {
                let inner = (0..r.below(3))
                    .map(|_| set((0..r.below(4)).map(|_| small(&mut r)).collect()))
                    .collect();
                (word(&mut r), CqlValue::List(inner))
            })
            .collect());
        let lm = CqlValue::List(
            (0..r.below(4))
                .map(|_| {
                    map((0..r.below(3))
                        .map(|_| (word(&mut r), small(&mut r)))
                        .collect())
                })
                .collect(),
        );
        let v: Values = vec![
            id.clone(),
            non_frozen(CqlValue::List(l)),
            non_frozen(s),
            non_frozen(mp),
            Some(fl),
            Some(fs),
            Some(fm),
            non_frozen(nested),
            non_frozen(lm),
        ];
        let cols = m.columns.join(", ");
        let marks = vec!["?"; m.columns.len()].join(", ");
        let insert = self.cql(&format!(
            "INSERT INTO {{ks}}.collections ({cols}) VALUES ({marks}) USING TIMESTAMP ?"
        ));
        let mut values = v.clone();
        values.push(Some(self.clock.tick()));
        let mut script = vec![op(&insert, values)];
        put(m, v, false);
        let key = [id.clone()];
        let (cl, cs, cm) = (col(m, "l"), col(m, "s"), col(m, "m"));
        match i % 6 {
            1 => {
                // Element deletes: set element, list value (every occurrence), map key.
                let row = get_mut(m, &key).values.clone();
                if let Some(CqlValue::Set(s)) = &row[cs] {
                    let gone = s[0].clone();
                    let cql = self.cql(
                        "UPDATE {ks}.collections USING TIMESTAMP ? SET s = s - ? WHERE id = ?",
                    );
                    script.push(op(
                        &cql,
                        vec![
                            Some(self.clock.tick()),
                            Some(CqlValue::Set(vec![gone.clone()])),
                            id.clone(),
                        ],
                    ));
                    let left: Vec<CqlValue> = s.iter().filter(|x| **x != gone).cloned().collect();
                    get_mut(m, &key).values[cs] = non_frozen(CqlValue::Set(left));
                }
                if let Some(CqlValue::List(l)) = &row[cl] {
                    let gone = l[0].clone();
                    let cql = self.cql(
                        "UPDATE {ks}.collections USING TIMESTAMP ? SET l = l - ? WHERE id = ?",
                    );
                    script.push(op(
                        &cql,
                        vec![
                            Some(self.clock.tick()),
                            Some(CqlValue::List(vec![gone.clone()])),
                            id.clone(),
                        ],
                    ));
                    let left: Vec<CqlValue> = l.iter().filter(|x| **x != gone).cloned().collect();
                    get_mut(m, &key).values[cl] = non_frozen(CqlValue::List(left));
                }
                if let Some(CqlValue::Map(mp)) = &row[cm] {
                    let gone = mp[0].0.clone();
                    let cql = self
                        .cql("DELETE m[?] FROM {ks}.collections USING TIMESTAMP ? WHERE id = ?");
                    script.push(op(
                        &cql,
                        vec![Some(gone.clone()), Some(self.clock.tick()), id.clone()],
                    ));
                    let left: Vec<_> = mp.iter().filter(|(k, _)| *k != gone).cloned().collect();
                    get_mut(m, &key).values[cm] = non_frozen(CqlValue::Map(left));
                }
            }
            2 => {
                let (x, w, k, n) = (small(&mut r), word(&mut r), word(&mut r), r.next() as i32);
                let cql = self.cql(
                    "UPDATE {ks}.collections USING TIMESTAMP ? SET l = l + ?, s = s + ?, m = m + ? WHERE id = ?",
                );
                script.push(op(
                    &cql,
                    vec![
                        Some(self.clock.tick()),
                        Some(CqlValue::List(vec![x.clone()])),
                        Some(CqlValue::Set(vec![w.clone()])),
                        Some(CqlValue::Map(vec![(k.clone(), CqlValue::Int(n))])),
                        id.clone(),
                    ],
                ));
                let row = &mut get_mut(m, &key).values;
                let mut l = match row[cl].take() {
                    Some(CqlValue::List(l)) => l,
                    _ => Vec::new(),
                };
                l.push(x);
                row[cl] = Some(CqlValue::List(l));
                let mut s = match row[cs].take() {
                    Some(CqlValue::Set(s)) => s,
                    _ => Vec::new(),
                };
                s.push(w);
                row[cs] = Some(set(s));
                let mut mp = match row[cm].take() {
                    Some(CqlValue::Map(mp)) => mp,
                    _ => Vec::new(),
                };
                mp.push((k, CqlValue::Int(n)));
                row[cm] = Some(map(mp));
            }
            3 => {
                let x = small(&mut r);
                let cql = self
                    .cql("UPDATE {ks}.collections USING TIMESTAMP ? SET l = ? + l WHERE id = ?");
                script.push(op(
                    &cql,
                    vec![
                        Some(self.clock.tick()),
                        Some(CqlValue::List(vec![x.clone()])),
                        id.clone(),
                    ],
                ));
                let row = &mut get_mut(m, &key).values;
                let mut l = match row[cl].take() {
                    Some(CqlValue::List(l)) => l,
                    _ => Vec::new(),
                };
                l.insert(0, x);
                row[cl] = Some(CqlValue::List(l));
            }
            _ => {}
        }
        if i % 12 == 9 {
            let cql =
                self.cql("DELETE nested, fl FROM {ks}.collections USING TIMESTAMP ? WHERE id = ?");
            script.push(op(&cql, vec![Some(self.clock.tick()), id.clone()]));
            let (cn, cf) = (col(m, "nested"), col(m, "fl"));
            let row = &mut get_mut(m, &key).values;
            row[cn] = None;
            row[cf] = None;
        }
        if i % 10 == 7 {
            let cql = self.cql("DELETE FROM {ks}.collections USING TIMESTAMP ? WHERE id = ?");
            script.push(op(&cql, vec![Some(self.clock.tick()), id]));
            remove(m, &key);
        }
        script
    }

    fn address(&self, r: &mut Rng, city: bool, zip: bool) -> CqlValue {
        let tags = set((0..r.below(3)).map(|_| CqlValue::Text(r.text())).collect());
        CqlValue::UserDefinedType {
            keyspace: self.keyspace.clone(),
            name: "address".into(),
            fields: vec![
                ("street".into(), text(r.text())),
                ("city".into(), if city { text(r.text()) } else { None }),
                (
                    "zip".into(),
                    if zip {
                        int(r.below(100_000) as i32)
                    } else {
                        None
                    },
                ),
                ("tags".into(), Some(tags)),
            ],
        }
    }

    fn people(&mut self, m: &mut TableModel, i: u64) -> Script {
        let mut r = self.rng("people", i);
        let id = Some(CqlValue::Uuid(r.uuid_v4()));
        let home = self.address(&mut r, i % 5 != 0, true);
        let cur = self.address(&mut r, true, i % 4 != 1);
        let others = CqlValue::List(
            (0..r.below(3))
                .map(|_| self.address(&mut r, true, true))
                .collect(),
        );
        let by_name = map((0..r.below(3))
            .map(|_| (CqlValue::Text(r.text()), self.address(&mut r, true, false)))
            .collect());
        let pos = CqlValue::Tuple(vec![
            int(r.next() as i32),
            if i % 6 == 0 { None } else { text(r.text()) },
            Some(CqlValue::Double(r.double(i))),
        ]);
        let nested = CqlValue::Tuple(vec![
            int(r.next() as i32),
            Some(CqlValue::List(
                (0..r.below(3)).map(|_| CqlValue::Text(r.text())).collect(),
            )),
            Some(self.address(&mut r, true, true)),
        ]);
        let v: Values = vec![
            id.clone(),
            text(r.text()),
            Some(home),
            Some(cur),
            non_frozen(others),
            non_frozen(by_name),
            Some(pos),
            Some(nested),
        ];
        let cols = m.columns.join(", ");
        let marks = vec!["?"; m.columns.len()].join(", ");
        let insert = self.cql(&format!(
            "INSERT INTO {{ks}}.people ({cols}) VALUES ({marks}) USING TIMESTAMP ?"
        ));
        let mut values = v.clone();
        values.push(Some(self.clock.tick()));
        let mut script = vec![op(&insert, values)];
        put(m, v, false);
        let key = [id.clone()];
        if i % 5 == 2 {
            // A field of a non-frozen UDT is its own cell.
            let cql =
                self.cql("UPDATE {ks}.people USING TIMESTAMP ? SET cur.city = null WHERE id = ?");
            script.push(op(&cql, vec![Some(self.clock.tick()), id.clone()]));
            let cc = col(m, "cur");
            if let Some(CqlValue::UserDefinedType { fields, .. }) = &mut get_mut(m, &key).values[cc]
            {
                fields[1].1 = None;
            }
        }
        if i % 9 == 4 {
            let (k, a) = (CqlValue::Text(r.text()), self.address(&mut r, false, true));
            let cql =
                self.cql("UPDATE {ks}.people USING TIMESTAMP ? SET by_name[?] = ? WHERE id = ?");
            script.push(op(
                &cql,
                vec![
                    Some(self.clock.tick()),
                    Some(k.clone()),
                    Some(a.clone()),
                    id.clone(),
                ],
            ));
            let cb = col(m, "by_name");
            let row = &mut get_mut(m, &key).values;
            let mut mp = match row[cb].take() {
                Some(CqlValue::Map(mp)) => mp,
                _ => Vec::new(),
            };
            mp.push((k, a));
            row[cb] = Some(map(mp));
        }
        if i % 8 == 3 {
            let cql = self.cql("DELETE FROM {ks}.people USING TIMESTAMP ? WHERE id = ?");
            script.push(op(&cql, vec![Some(self.clock.tick()), id]));
            remove(m, &key);
        }
        script
    }

    /// One partition of `events` (EVENTS_PER_PARTITION rows) per index.
    fn events(&mut self, m: &mut TableModel, p: u64) -> Script {
        let mut r = self.rng("events", p);
        let tenant = text(format!(
            "tenant-{p}-{}",
            r.pick(&["ñandú", "東京", "🚀", "plain"])
        ));
        let day = Some(CqlValue::Date(CqlDate((1u32 << 31) + 18_000 + p as u32)));
        let base = 1_600_000_000_000 + p as i64 * 86_400_000;
        let mut label = text(r.text());
        // (happened, seq) -> [payload, score, note]
        let mut rows: BTreeMap<(i64, i32), Values> = BTreeMap::new();
        let mut script = Vec::new();
        let with_label = self.cql(
            "INSERT INTO {ks}.events (tenant, day, happened, seq, label, payload, score, note) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
        );
        let without = self.cql(
            "INSERT INTO {ks}.events (tenant, day, happened, seq, payload, score, note) \
             VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
        );
        let at = |j: u64| base + (j / 2) as i64 * 60_000;
        for j in 0..EVENTS_PER_PARTITION {
            let n = if j == 0 { 0 } else { r.below(64) as usize };
            let cells: Values = vec![
                Some(CqlValue::Blob(r.bytes(n))),
                Some(CqlValue::Double(r.double(p * 8 + j))),
                if j == 7 { None } else { text(r.text()) },
            ];
            let key = vec![
                tenant.clone(),
                day.clone(),
                Some(CqlValue::Timestamp(CqlTimestamp(at(j)))),
                int((j % 2) as i32),
            ];
            let mut values = key;
            if j == 0 {
                values.push(label.clone());
            }
            values.extend(cells.iter().cloned());
            values.push(Some(self.clock.tick()));
            script.push(op(if j == 0 { &with_label } else { &without }, values));
            rows.insert((at(j), (j % 2) as i32), cells);
        }
        let pk = vec![tenant.clone(), day.clone()];
        let ts = |v: i64| Some(CqlValue::Timestamp(CqlTimestamp(v)));
        if p % 3 == 0 {
            label = text(r.text());
            let cql = self.cql(
                "UPDATE {ks}.events USING TIMESTAMP ? SET label = ? WHERE tenant = ? AND day = ?",
            );
            script.push(op(
                &cql,
                [vec![Some(self.clock.tick()), label.clone()], pk.clone()].concat(),
            ));
        }
        if p % 5 == 1 {
            let cql = self.cql(
                "DELETE FROM {ks}.events USING TIMESTAMP ? WHERE tenant = ? AND day = ? AND happened = ? AND seq = ?",
            );
            script.push(op(
                &cql,
                [
                    vec![Some(self.clock.tick())],
                    pk.clone(),
                    vec![ts(at(2)), int(0)],
                ]
                .concat(),
            ));
            rows.remove(&(at(2), 0));
        }
        if p % 4 == 0 {
            let cql = self.cql(
                "DELETE note FROM {ks}.events USING TIMESTAMP ? WHERE tenant = ? AND day = ? AND happened = ? AND seq = ?",
            );
            script.push(op(
                &cql,
                [
                    vec![Some(self.clock.tick())],
                    pk.clone(),
                    vec![ts(at(5)), int(1)],
                ]
                .concat(),
            ));
            if let Some(cells) = rows.get_mut(&(at(5), 1)) {
                cells[2] = None;
            }
        }
        if p % 6 == 4 {
            // A range tombstone.
            let cql = self.cql(
                "DELETE FROM {ks}.events USING TIMESTAMP ? WHERE tenant = ? AND day = ? AND happened <= ?",
            );
            script.push(op(
                &cql,
                [vec![Some(self.clock.tick())], pk.clone(), vec![ts(at(2))]].concat(),
            ));
            rows.retain(|(h, _), _| *h > at(2));
        }
        if p % 11 == 5 {
            // Every row goes; the static column stays and reads as one row
            // with null clustering columns.
            let cql = self.cql(
                "DELETE FROM {ks}.events USING TIMESTAMP ? WHERE tenant = ? AND day = ? AND happened >= ?",
            );
            script.push(op(
                &cql,
                [vec![Some(self.clock.tick())], pk.clone(), vec![ts(base)]].concat(),
            ));
            rows.clear();
        }
        let mut deleted = false;
        if p % 7 == 3 {
            let cql =
                self.cql("DELETE FROM {ks}.events USING TIMESTAMP ? WHERE tenant = ? AND day = ?");
            script.push(op(
                &cql,
                [vec![Some(self.clock.tick())], pk.clone()].concat(),
            ));
            deleted = true;
        }
        if !deleted {
            if rows.is_empty() {
                put(
                    m,
                    [
                        pk.clone(),
                        vec![None, None, label.clone(), None, None, None],
                    ]
                    .concat(),
                    false,
                );
            }
            for ((h, s), cells) in rows {
                let values = [pk.clone(), vec![ts(h), int(s), label.clone()], cells].concat();
                put(m, values, false);
            }
        }
        script
    }

    fn counters(&mut self, m: &mut TableModel, i: u64) -> Script {
        let mut r = self.rng("counters", i);
        let k = text(format!("ctr-{}-{}", i / 4, r.pick(&["ü", "数", "🔢", ""])));
        let bucket = int((i % 4) as i32);
        let both = self
            .cql("UPDATE {ks}.counters SET c1 = c1 + ?, c2 = c2 + ? WHERE k = ? AND bucket = ?");
        let one = self.cql("UPDATE {ks}.counters SET c1 = c1 + ? WHERE k = ? AND bucket = ?");
        let (mut c1, mut c2) = (0i64, 0i64);
        let mut script = Vec::new();
        for _ in 0..1 + r.below(3) {
            let (d1, d2) = (r.range_i64(-1000, 1000), r.range_i64(-1000, 1000));
            c1 += d1;
            if i % 5 == 0 {
                script.push(op(
                    &one,
                    vec![
                        Some(CqlValue::Counter(Counter(d1))),
                        k.clone(),
                        bucket.clone(),
                    ],
                ));
            } else {
                c2 += d2;
                script.push(op(
                    &both,
                    vec![
                        Some(CqlValue::Counter(Counter(d1))),
                        Some(CqlValue::Counter(Counter(d2))),
                        k.clone(),
                        bucket.clone(),
                    ],
                ));
            }
        }
        let counter = |v| Some(CqlValue::Counter(Counter(v)));
        let c2 = if i % 5 == 0 { None } else { counter(c2) };
        if i % 9 == 4 {
            // A deleted counter is never written again (Cassandra cannot revive it).
            let cql = self.cql("DELETE FROM {ks}.counters WHERE k = ? AND bucket = ?");
            script.push(op(&cql, vec![k, bucket]));
        } else {
            put(m, vec![k, bucket, counter(c1), c2], false);
        }
        script
    }

    fn expiring(&mut self, m: &mut TableModel, i: u64) -> Script {
        let mut r = self.rng("expiring", i);
        let id = int(i as i32);
        let (v, n) = (text(r.text()), int(r.next() as i32));
        let ttl = i % 2 == 0;
        let cql = if ttl {
            self.cql(
                "INSERT INTO {ks}.expiring (id, v, n) VALUES (?, ?, ?) USING TTL ? AND TIMESTAMP ?",
            )
        } else {
            self.cql("INSERT INTO {ks}.expiring (id, v, n) VALUES (?, ?, ?) USING TIMESTAMP ?")
        };
        let mut values = vec![id.clone(), v.clone(), n.clone()];
        if ttl {
            values.push(int(TTL_SECONDS));
        }
        values.push(Some(self.clock.tick()));
        let mut script = vec![op(&cql, values)];
        put(m, vec![id.clone(), v, n], ttl);
        if i % 10 == 1 {
            // A TTL on one cell of a row written without one.
            let new_v = text(r.text());
            let cql =
                self.cql("UPDATE {ks}.expiring USING TTL ? AND TIMESTAMP ? SET v = ? WHERE id = ?");
            script.push(op(
                &cql,
                vec![
                    int(TTL_SECONDS),
                    Some(self.clock.tick()),
                    new_v.clone(),
                    id.clone(),
                ],
            ));
            let row = get_mut(m, &[id]);
            row.values[1] = new_v;
            row.ttl = true;
        }
        script
    }
}
