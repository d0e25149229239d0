//! Which tables of a backup a restore takes: named ones, a keyspace's, or
//! every non-system table; unknown names are refused with what the backup has.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{CassandraError, Result};
use crate::restore::schema::{is_system_keyspace, Object, Statement};

/// Every table the backup knows: from its schema (also empty tables) and from
/// its nodes' file lists (also system tables, which the schema text omits).
pub fn backup_tables(
    schema: &[Statement],
    files: impl IntoIterator<Item = (String, String)>,
) -> BTreeSet<(String, String)> {
    let views: BTreeSet<(String, String)> = schema
        .iter()
        .filter_map(|s| match &s.object {
            Object::View { keyspace, name, .. } => Some((keyspace.clone(), name.clone())),
            _ => None,
        })
        .collect();
    let mut out: BTreeSet<(String, String)> = schema
        .iter()
        .filter_map(|s| match &s.object {
            Object::Table { keyspace, name } => Some((keyspace.clone(), name.clone())),
            _ => None,
        })
        .collect();
    // A view's data is rebuilt from its base table, never restored itself.
    out.extend(files.into_iter().filter(|t| !views.contains(t)));
    out
}

/// The tables to restore. `tables` may be `name` (with `keyspace`, or unique
/// in the backup) or `keyspace.name`.
pub fn select(
    all: &BTreeSet<(String, String)>,
    keyspace: Option<&str>,
    tables: &[String],
) -> Result<Vec<(String, String)>> {
    let keyspaces: BTreeSet<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    if let Some(ks) = keyspace {
        if !keyspaces.contains(ks) {
            return Err(unknown(
                all,
                &format!("keyspace {ks:?} is not in the backup"),
            ));
        }
    }
    if tables.is_empty() {
        let picked: Vec<(String, String)> = all
            .iter()
            .filter(|(k, _)| match keyspace {
                Some(ks) => k == ks,
                None => !is_system_keyspace(k),
            })
            .cloned()
            .collect();
        if picked.is_empty() {
            return Err(unknown(all, "the backup has no table to restore there"));
        }
        return Ok(picked);
    }
    let mut out = Vec::new();
    for t in tables {
        let (ks, name) = match (t.split_once('.'), keyspace) {
            (Some((k, n)), _) => (k.to_string(), n.to_string()),
            (None, Some(k)) => (k.to_string(), t.clone()),
            (None, None) => {
                let hits: Vec<&(String, String)> = all.iter().filter(|(_, n)| n == t).collect();
                match hits.as_slice() {
                    [one] => (*one).clone(),
                    [] => return Err(unknown(all, &format!("table {t:?} is not in the backup"))),
                    many => {
                        let names: Vec<String> =
                            many.iter().map(|(k, n)| format!("{k}.{n}")).collect();
                        return Err(CassandraError::Invalid(format!(
                            "table {t:?} is in several keyspaces ({}); give --keyspace or KEYSPACE.TABLE",
                            names.join(", ")
                        )));
                    }
                }
            }
        };
        if !all.contains(&(ks.clone(), name.clone())) {
            return Err(unknown(
                all,
                &format!("table {ks}.{name} is not in the backup"),
            ));
        }
        if !out.contains(&(ks.clone(), name.clone())) {
            out.push((ks, name));
        }
    }
    Ok(out)
}

/// The error for an unknown name: lists the backup's non-system tables by
/// keyspace (system keyspaces by name only).
fn unknown(all: &BTreeSet<(String, String)>, what: &str) -> CassandraError {
    let mut by_ks: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, t) in all {
        by_ks.entry(k).or_default().push(t);
    }
    let user: Vec<String> = by_ks
        .iter()
        .filter(|(k, _)| !is_system_keyspace(k))
        .map(|(k, ts)| format!("{k} ({})", ts.join(", ")))
        .collect();
    let system: Vec<&str> = by_ks
        .keys()
        .copied()
        .filter(|k| is_system_keyspace(k))
        .collect();
    let mut msg = format!(
        "{what}; the backup has: {}",
        if user.is_empty() {
            "no user tables".into()
        } else {
            user.join("; ")
        }
    );
    if !system.is_empty() {
        msg.push_str(&format!("; system keyspaces: {}", system.join(", ")));
    }
    CassandraError::Invalid(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::schema::parse;

    fn all() -> BTreeSet<(String, String)> {
        let schema = parse("CREATE TABLE a.t (x int PRIMARY KEY); CREATE TABLE a.u (x int PRIMARY KEY); CREATE TABLE b.t (x int PRIMARY KEY); CREATE MATERIALIZED VIEW a.v AS SELECT * FROM a.t WHERE x IS NOT NULL PRIMARY KEY (x)");
        backup_tables(
            &schema,
            [
                ("system".to_string(), "local".to_string()),
                ("a".into(), "v".into()),
            ],
        )
    }

    #[test]
    fn whole_backup_skips_system_and_views() {
        let s = select(&all(), None, &[]).unwrap();
        assert_eq!(
            s,
            vec![
                ("a".into(), "t".into()),
                ("a".into(), "u".into()),
                ("b".into(), "t".into())
            ]
        );
        assert_eq!(
            select(&all(), Some("system"), &[]).unwrap(),
            vec![("system".into(), "local".into())]
        );
    }

    #[test]
    fn names_resolve_or_are_refused_with_the_list() {
        assert_eq!(
            select(&all(), None, &["u".into()]).unwrap(),
            vec![("a".into(), "u".into())]
        );
        assert_eq!(
            select(&all(), Some("b"), &["t".into()]).unwrap(),
            vec![("b".into(), "t".into())]
        );
        let e = select(&all(), None, &["t".into()]).unwrap_err().to_string();
        assert!(e.contains("a.t, b.t"), "{e}");
        let e = select(&all(), Some("a"), &["nope".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.nope is not in the backup")
                && e.contains("a (t, u); b (t)")
                && e.contains("system keyspaces: system"),
            "{e}"
        );
        let e = select(&all(), Some("zz"), &[]).unwrap_err().to_string();
        assert!(e.contains("keyspace \"zz\""), "{e}");
    }
}
