//! The backup's schema (`DESCRIBE SCHEMA` text) as statements: split, named
//! (which keyspace, type, table, index or view each creates) and adapted for
//! a restore (`IF NOT EXISTS`, another table name, no table id).
//!
//! The splitter knows CQL's string literals ('..', with '' inside), quoted
//! identifiers ("..", with "" inside), `$$` function bodies and comments, so
//! a `;` inside any of them does not end a statement.

use crate::error::{CassandraError, Result};

/// Keyspaces whose tables are never restored unless named explicitly.
pub const SYSTEM_KEYSPACES: &[&str] = &[
    "system",
    "system_schema",
    "system_auth",
    "system_distributed",
    "system_traces",
    "system_views",
    "system_virtual_schema",
];

pub fn is_system_keyspace(ks: &str) -> bool {
    SYSTEM_KEYSPACES.contains(&ks)
}

/// What a statement creates (names as Cassandra stores them: unquoted names
/// lower-cased, quoted ones as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Keyspace {
        keyspace: String,
    },
    Type {
        keyspace: String,
        name: String,
    },
    Table {
        keyspace: String,
        name: String,
    },
    /// `CREATE [CUSTOM] INDEX name ON ks.table`
    Index {
        keyspace: String,
        table: String,
    },
    View {
        keyspace: String,
        name: String,
        base: String,
    },
    /// `ALTER TABLE ks.t ...` (e.g. dropped-column records).
    AlterTable {
        keyspace: String,
        table: String,
    },
    /// Functions, aggregates: kept with their keyspace.
    Other {
        keyspace: String,
    },
    Unknown,
}

impl Object {
    pub fn keyspace(&self) -> Option<&str> {
        match self {
            Object::Keyspace { keyspace }
            | Object::Type { keyspace, .. }
            | Object::Table { keyspace, .. }
            | Object::Index { keyspace, .. }
            | Object::View { keyspace, .. }
            | Object::AlterTable { keyspace, .. }
            | Object::Other { keyspace } => Some(keyspace),
            Object::Unknown => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub cql: String,
    pub object: Object,
}

/// Splits and names every statement of a `DESCRIBE SCHEMA` text.
pub fn parse(schema: &str) -> Vec<Statement> {
    split(schema)
        .into_iter()
        .map(|cql| Statement {
            object: classify(&cql),
            cql,
        })
        .collect()
}

/// The statements, comments removed, without their final `;`.
pub fn split(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    let mut start = 0; // start of the pending verbatim run in `text`
    macro_rules! flush {
        ($to:expr) => {
            cur.push_str(&text[start..$to]);
        };
    }
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        if i + 1 < b.len() && b[i + 1] == q {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'$' if b.get(i + 1) == Some(&b'$') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'$' && b[i + 1] == b'$') {
                    i += 1;
                }
                i += 2;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                flush!(i);
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                start = i;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                flush!(i);
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                start = i;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                flush!(i);
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i = (i + 2).min(b.len());
                start = i;
            }
            b';' => {
                flush!(i);
                let s = cur.trim();
                if !s.is_empty() {
                    out.push(s.to_string());
                }
                cur.clear();
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    let end = b.len().min(i);
    cur.push_str(&text[start.min(end)..end]);
    let s = cur.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
    out
}

/// Words and names of a statement's head, enough to classify it.
struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Lexer { s, pos: 0 }
    }

    fn skip_ws(&mut self) {
        while self.s[self.pos..].starts_with(|c: char| c.is_whitespace()) {
            self.pos += self.s[self.pos..].chars().next().map_or(1, char::len_utf8);
        }
    }

    /// The next identifier as Cassandra stores it, or the next punctuation.
    fn token(&mut self) -> Option<String> {
        self.skip_ws();
        let rest = &self.s[self.pos..];
        let c = rest.chars().next()?;
        if c == '"' {
            let mut out = String::new();
            let mut it = rest.char_indices().skip(1).peekable();
            while let Some((i, ch)) = it.next() {
                if ch == '"' {
                    if it.peek().map(|x| x.1) == Some('"') {
                        it.next();
                        out.push('"');
                        continue;
                    }
                    self.pos += i + 1;
                    return Some(out);
                }
                out.push(ch);
            }
            self.pos = self.s.len();
            return Some(out);
        }
        if c.is_alphanumeric() || c == '_' {
            let len = rest
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            self.pos += len;
            return Some(rest[..len].to_lowercase());
        }
        self.pos += c.len_utf8();
        Some(c.to_string())
    }

    fn keyword(&mut self, kw: &str) -> bool {
        let save = self.pos;
        self.skip_ws();
        let rest = &self.s[self.pos..];
        let len = rest
            .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
            .unwrap_or(rest.len());
        if rest[..len].eq_ignore_ascii_case(kw) {
            self.pos += len;
            true
        } else {
            self.pos = save;
            false
        }
    }

    fn if_not_exists(&mut self) {
        let save = self.pos;
        if !(self.keyword("if") && self.keyword("not") && self.keyword("exists")) {
            self.pos = save;
        }
    }

    /// `ks.name` or `name`; returns (keyspace, name) and the byte span.
    fn qualified(&mut self) -> Option<(Option<String>, String, std::ops::Range<usize>)> {
        self.skip_ws();
        let from = self.pos;
        let first = self.token()?;
        self.skip_ws();
        if self.s[self.pos..].starts_with('.') {
            self.pos += 1;
            let second = self.token()?;
            Some((Some(first), second, from..self.pos))
        } else {
            Some((None, first, from..self.pos))
        }
    }
}

fn classify(cql: &str) -> Object {
    let mut lx = Lexer::new(cql);
    if lx.keyword("alter") && lx.keyword("table") {
        return match lx.qualified() {
            Some((Some(keyspace), table, _)) => Object::AlterTable { keyspace, table },
            _ => Object::Unknown,
        };
    }
    let mut lx = Lexer::new(cql);
    if !lx.keyword("create") {
        return Object::Unknown;
    }
    let save = lx.pos;
    if lx.keyword("or") && lx.keyword("replace") {
    } else {
        lx.pos = save;
    }
    let kind = lx.token().unwrap_or_default();
    let kind = match kind.as_str() {
        "custom" => {
            lx.keyword("index");
            "index".to_string()
        }
        "materialized" => {
            lx.keyword("view");
            "view".to_string()
        }
        _ => kind,
    };
    lx.if_not_exists();
    match kind.as_str() {
        "keyspace" => lx
            .token()
            .map_or(Object::Unknown, |keyspace| Object::Keyspace { keyspace }),
        "type" | "table" | "view" | "function" | "aggregate" => {
            let Some((Some(keyspace), name, _)) = lx.qualified() else {
                return Object::Unknown;
            };
            match kind.as_str() {
                "type" => Object::Type { keyspace, name },
                "table" => Object::Table { keyspace, name },
                "view" => {
                    // ... AS SELECT ... FROM ks.base
                    let lower = cql.to_lowercase();
                    let base = lower.find(" from ").and_then(|at| {
                        let mut l2 = Lexer::new(&cql[at + 6..]);
                        l2.qualified().map(|q| q.1)
                    });
                    Object::View {
                        keyspace,
                        name,
                        base: base.unwrap_or_default(),
                    }
                }
                _ => Object::Other { keyspace },
            }
        }
        "index" => {
            // [name] ON ks.table
            let save = lx.pos;
            if !lx.keyword("on") {
                lx.pos = save;
                let _ = lx.token();
                if !lx.keyword("on") {
                    return Object::Unknown;
                }
            }
            match lx.qualified() {
                Some((Some(keyspace), table, _)) => Object::Index { keyspace, table },
                _ => Object::Unknown,
            }
        }
        _ => Object::Unknown,
    }
}

/// Adds `IF NOT EXISTS` after the object kind of a CREATE statement, so that
/// what exists on the target is skipped, not an error.
pub fn if_not_exists(cql: &str) -> String {
    let mut lx = Lexer::new(cql);
    if !lx.keyword("create") {
        return cql.to_string();
    }
    for kinds in [
        &["keyspace"][..],
        &["type"],
        &["table"],
        &["custom", "index"],
        &["index"],
        &["materialized", "view"],
        &["function"],
        &["aggregate"],
    ] {
        let save = lx.pos;
        if kinds.iter().all(|k| lx.keyword(k)) {
            let at = lx.pos;
            let mut probe = Lexer { s: cql, pos: at };
            if probe.keyword("if") {
                return cql.to_string();
            }
            return format!("{} IF NOT EXISTS{}", &cql[..at], &cql[at..]);
        }
        lx.pos = save;
    }
    cql.to_string()
}

/// Quotes an identifier when Cassandra would not read it back as written.
pub fn quote_ident(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// `CREATE TABLE ks.old (...)` as `CREATE TABLE ks.new (...)`; a table id
/// option (`ID = ...`, printed with internals) is dropped so the new table
/// gets its own.
pub fn rename_table(cql: &str, new_name: &str) -> Result<String> {
    let mut lx = Lexer::new(cql);
    if !(lx.keyword("create") && lx.keyword("table")) {
        return Err(CassandraError::Invalid(format!(
            "not a CREATE TABLE statement: {cql:.60}"
        )));
    }
    lx.if_not_exists();
    let Some((Some(ks), _, span)) = lx.qualified() else {
        return Err(CassandraError::Invalid(format!(
            "CREATE TABLE without keyspace: {cql:.60}"
        )));
    };
    let renamed = format!(
        "{}{}.{}{}",
        &cql[..span.start],
        quote_ident(&ks),
        quote_ident(new_name),
        &cql[span.end..]
    );
    Ok(strip_table_id(&renamed))
}

/// Removes `ID = <uuid>` from a table's WITH options: a recreated table must
/// not claim the id of a table that was dropped or still lives.
pub fn strip_table_id(cql: &str) -> String {
    let lower = cql.to_ascii_lowercase();
    // Search outside the column list: the options follow ") WITH".
    let Some(with_at) = lower.rfind(") with ") else {
        return cql.to_string();
    };
    let opts = &lower[with_at..];
    let Some(rel) = find_word(opts, "id") else {
        return cql.to_string();
    };
    let id_at = with_at + rel;
    let after = &lower[id_at + 2..];
    let trimmed = after.trim_start();
    if !trimmed.starts_with('=') {
        return cql.to_string();
    }
    let val_start = id_at + 2 + (after.len() - trimmed.len()) + 1;
    let rest = &lower[val_start..];
    let val_len = rest
        .trim_start()
        .find(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .unwrap_or(rest.trim_start().len());
    if val_len != 36 {
        // Not a table id (a UUID): some other "id" word; leave the text.
        return cql.to_string();
    }
    let end = val_start + (rest.len() - rest.trim_start().len()) + val_len;
    let tail = lower[end..].trim_start();
    if let Some(t) = tail.strip_prefix("and ") {
        // "WITH ID = x AND a = b": drop "ID = x AND ".
        let cut_to = cql.len() - t.len();
        return format!("{}{}", &cql[..id_at], &cql[cut_to..]);
    }
    // "... AND ID = x" at the end or "WITH ID = x" alone.
    let head = cql[..id_at].trim_end();
    let head_l = head.to_ascii_lowercase();
    if let Some(h) = head_l.strip_suffix(" and") {
        return format!("{}{}", &cql[..h.len()], &cql[end..]);
    }
    if let Some(h) = head_l.strip_suffix(" with") {
        return format!("{}{}", &cql[..h.len()], &cql[end..]);
    }
    cql.to_string()
}

fn find_word(hay: &str, word: &str) -> Option<usize> {
    let b = hay.as_bytes();
    let mut from = 0;
    while let Some(rel) = hay[from..].find(word) {
        let at = from + rel;
        let before = at == 0
            || !(b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_' || b[at - 1] == b'\'');
        let end = at + word.len();
        let after = end >= b.len()
            || !(b[end].is_ascii_alphanumeric() || b[end] == b'_' || b[end] == b'\'');
        if before && after {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"CREATE KEYSPACE shop WITH replication = {'class': 'org.apache.cassandra.locator.SimpleStrategy', 'replication_factor': '3'}  AND durable_writes = true;

CREATE TYPE shop.address (
    street text,
    "Town" text
);

/* Warning: a comment; with a semicolon */
CREATE TABLE shop."Orders" (
    id int PRIMARY KEY,
    note text
) WITH ID = 5a1c395e-b41f-11e5-9f22-ba0be0483c18
    AND comment = 'a; b ''quoted'''
    AND gc_grace_seconds = 864000;

CREATE INDEX orders_note ON shop."Orders" (note);

CREATE CUSTOM INDEX IF NOT EXISTS sai ON shop.t2 (v) USING 'StorageAttachedIndex';

CREATE MATERIALIZED VIEW shop.by_note AS
    SELECT * FROM shop."Orders" WHERE note IS NOT NULL AND id IS NOT NULL
    PRIMARY KEY (note, id);

CREATE FUNCTION shop.f(x int) RETURNS NULL ON NULL INPUT RETURNS int LANGUAGE java AS $$ return x; $$;
-- trailing comment
"#;

    #[test]
    fn splits_and_names_statements() {
        let st = parse(SCHEMA);
        let objs: Vec<&Object> = st.iter().map(|s| &s.object).collect();
        assert_eq!(
            objs,
            vec![
                &Object::Keyspace {
                    keyspace: "shop".into()
                },
                &Object::Type {
                    keyspace: "shop".into(),
                    name: "address".into()
                },
                &Object::Table {
                    keyspace: "shop".into(),
                    name: "Orders".into()
                },
                &Object::Index {
                    keyspace: "shop".into(),
                    table: "Orders".into()
                },
                &Object::Index {
                    keyspace: "shop".into(),
                    table: "t2".into()
                },
                &Object::View {
                    keyspace: "shop".into(),
                    name: "by_note".into(),
                    base: "Orders".into()
                },
                &Object::Other {
                    keyspace: "shop".into()
                },
            ]
        );
        assert!(st[2].cql.contains("'a; b ''quoted'''"), "{}", st[2].cql);
        assert!(st[6].cql.ends_with("$$ return x; $$"), "{}", st[6].cql);
        assert!(!st[2].cql.contains("Warning"));
    }

    #[test]
    fn if_not_exists_is_added_once() {
        assert_eq!(
            if_not_exists("CREATE TABLE ks.t (a int PRIMARY KEY)"),
            "CREATE TABLE IF NOT EXISTS ks.t (a int PRIMARY KEY)"
        );
        assert_eq!(
            if_not_exists("create custom index i ON ks.t (v)"),
            "create custom index IF NOT EXISTS i ON ks.t (v)"
        );
        assert_eq!(
            if_not_exists("CREATE TYPE IF NOT EXISTS ks.u (a int)"),
            "CREATE TYPE IF NOT EXISTS ks.u (a int)"
        );
        assert_eq!(
            if_not_exists("ALTER TABLE ks.t DROP x"),
            "ALTER TABLE ks.t DROP x"
        );
    }

    #[test]
    fn rename_replaces_the_name_and_drops_the_id() {
        let st = parse(SCHEMA);
        let r = rename_table(&st[2].cql, "orders_copy").unwrap();
        assert!(r.starts_with("CREATE TABLE shop.orders_copy ("), "{r}");
        assert!(!r.to_lowercase().contains("5a1c395e"), "{r}");
        assert!(r.contains(") WITH comment = 'a; b"), "{r}");
        let r = rename_table("CREATE TABLE ks.t (a int PRIMARY KEY) WITH gc_grace_seconds = 1 AND ID = 5a1c395e-b41f-11e5-9f22-ba0be0483c18", "New").unwrap();
        assert_eq!(
            r,
            "CREATE TABLE ks.\"New\" (a int PRIMARY KEY) WITH gc_grace_seconds = 1"
        );
        let r = rename_table(
            "CREATE TABLE ks.t (id int PRIMARY KEY, idx int) WITH comment = 'id = 1'",
            "u",
        )
        .unwrap();
        assert_eq!(
            r,
            "CREATE TABLE ks.u (id int PRIMARY KEY, idx int) WITH comment = 'id = 1'"
        );
    }
}
