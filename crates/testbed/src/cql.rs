//! `testbed cql`: run CQL statements against a testbed cluster with the
//! scylla driver, for scripts and the demo (no cqlsh on this machine: it
//! needs Python 2-era packages Debian does not ship with Cassandra 5.0).
//!
//! Statements are split on `;` outside quotes and run in order at QUORUM;
//! rows of a SELECT are printed one per line, columns separated by ` | `.

use anyhow::{Context, Result};
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::unprepared::Statement;
use scylla::statement::Consistency;
use scylla::value::{CqlValue, Row};

use crate::cassandra::Info;

/// Runs `script` against the cluster; returns the printed lines.
pub fn run(info: &Info, script: &str) -> Result<Vec<String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let session = SessionBuilder::new()
            .known_nodes(&info.contact_points)
            .build()
            .await
            .context("connecting over CQL")?;
        let mut out = Vec::new();
        for stmt in split(script) {
            let mut st = Statement::new(stmt.clone());
            st.set_consistency(Consistency::Quorum);
            let result = session
                .query_unpaged(st, ())
                .await
                .with_context(|| format!("running {stmt:?}"))?;
            if let Ok(rows) = result.into_rows_result() {
                for row in rows.rows::<Row>()? {
                    let row = row?;
                    let cols: Vec<String> = row.columns.iter().map(|c| show_opt(c.as_ref())).collect();
                    out.push(cols.join(" | "));
                }
            }
        }
        Ok(out)
    })
}

/// Splits on `;` that are not inside '...' or "..." literals.
fn split(script: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote) = (Vec::new(), String::new(), None::<char>);
    for c in script.chars() {
        match (c, quote) {
            ('\'' | '"', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            (';', None) => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn show_opt(v: Option<&CqlValue>) -> String {
    v.map(show).unwrap_or_else(|| "null".into())
}

fn show(v: &CqlValue) -> String {
    match v {
        CqlValue::Text(s) | CqlValue::Ascii(s) => s.clone(),
        CqlValue::Int(i) => i.to_string(),
        CqlValue::BigInt(i) => i.to_string(),
        CqlValue::SmallInt(i) => i.to_string(),
        CqlValue::TinyInt(i) => i.to_string(),
        CqlValue::Boolean(b) => b.to_string(),
        CqlValue::Double(d) => d.to_string(),
        CqlValue::Float(f) => f.to_string(),
        CqlValue::Counter(c) => c.0.to_string(),
        CqlValue::Uuid(u) => u.to_string(),
        CqlValue::Timeuuid(u) => u.to_string(),
        CqlValue::Inet(a) => a.to_string(),
        CqlValue::List(xs) | CqlValue::Set(xs) => {
            format!("[{}]", xs.iter().map(show).collect::<Vec<_>>().join(", "))
        }
        CqlValue::Map(kv) => format!(
            "{{{}}}",
            kv.iter()
                .map(|(k, v)| format!("{}: {}", show(k), show(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_outside_quotes_only() {
        let s = split("CREATE TABLE a (k int); INSERT INTO a (k, v) VALUES (1, 'x;y');\n SELECT * FROM a");
        assert_eq!(s.len(), 3);
        assert!(s[1].ends_with("'x;y')"));
    }
}
