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
        CqlValue::Timestamp(t) => timestamp(t.0),
        CqlValue::Decimal(d) => {
            let (bytes, scale) = d.as_signed_be_bytes_slice_and_exponent();
            decimal(bytes, scale).unwrap_or_else(|| format!("{d:?}"))
        }
        other => format!("{other:?}"),
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD hh:mm:ss.mmmZ` (UTC).
fn timestamp(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, sec, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{sec:02}.{milli:03}Z")
}

/// A CQL decimal (big-endian two's complement unscaled value, scale) as text,
/// when the unscaled value fits in 128 bits.
fn decimal(bytes: &[u8], scale: i32) -> Option<String> {
    if bytes.len() > 16 || !(0..=38).contains(&scale) {
        return None;
    }
    let neg = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut v: i128 = if neg { -1 } else { 0 };
    for b in bytes {
        v = (v << 8) | i128::from(*b);
    }
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    let sign = if v < 0 { "-" } else { "" };
    Some(if scale == 0 { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") })
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

    #[test]
    fn shows_timestamps_and_decimals_as_text() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000Z");
        assert_eq!(timestamp(1_770_804_060_000), "2026-02-11 10:01:00.000Z");
        assert_eq!(timestamp(-1), "1969-12-31 23:59:59.999Z");
        assert_eq!(decimal(&[1, 35], 2).as_deref(), Some("2.91"));
        assert_eq!(decimal(&[0xff, 0x38], 3).as_deref(), Some("-0.200"));
        assert_eq!(decimal(&[5], 0).as_deref(), Some("5"));
    }
}
