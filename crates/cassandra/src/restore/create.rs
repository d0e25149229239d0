//! What a restore creates on the target from the backup's schema.

use crate::error::Result;
use crate::restore::schema::{self, Object, Statement};
use crate::restore::target::Existing;

pub struct SchemaPlan {
    /// Statements to run, in order.
    pub run: Vec<String>,
    /// (keyspace, table) created by them.
    pub created: Vec<(String, String)>,
    pub notes: Vec<String>,
}

/// What to create on the target, in the schema's order (keyspace, types,
/// tables, then what hangs on them): what it lacks of the keyspaces and
/// tables restored; a whole-backup restore also takes views and functions.
pub fn schema_plan(
    statements: &[Statement],
    selected: &[(String, String)],
    existing: &Existing,
    whole: bool,
    rename: Option<&str>,
) -> Result<SchemaPlan> {
    let keyspaces: Vec<&str> = selected.iter().map(|(k, _)| k.as_str()).collect();
    let mut p = SchemaPlan {
        run: Vec::new(),
        created: Vec::new(),
        notes: Vec::new(),
    };
    let new_ks: Vec<&str> = keyspaces
        .iter()
        .copied()
        .filter(|k| !existing.keyspaces.contains_key(*k))
        .collect();
    // Base tables created now under their own name: their indexes, dropped
    // column records and (whole restore) views follow.
    let mut fresh: Vec<(String, String)> = Vec::new();
    for st in statements {
        match &st.object {
            Object::Keyspace { keyspace } if new_ks.contains(&keyspace.as_str()) => {
                p.run.push(schema::if_not_exists(&st.cql))
            }
            Object::Type { keyspace, name }
                if keyspaces.contains(&keyspace.as_str())
                    && !existing.types.contains(&(keyspace.clone(), name.clone())) =>
            {
                p.run.push(schema::if_not_exists(&st.cql))
            }
            Object::Table { keyspace, name }
                if selected.contains(&(keyspace.clone(), name.clone())) =>
            {
                let target = rename.unwrap_or(name).to_string();
                if existing
                    .tables
                    .contains(&(keyspace.clone(), target.clone()))
                {
                    continue;
                }
                let cql = match rename {
                    Some(new) => schema::rename_table(&st.cql, new)?,
                    None => schema::strip_table_id(&st.cql),
                };
                p.run.push(schema::if_not_exists(&cql));
                p.created.push((keyspace.clone(), target));
                if rename.is_none() {
                    fresh.push((keyspace.clone(), name.clone()));
                }
            }
            Object::Index { keyspace, table } | Object::AlterTable { keyspace, table }
                if fresh.contains(&(keyspace.clone(), table.clone())) =>
            {
                p.run.push(schema::if_not_exists(&st.cql))
            }
            Object::Index { keyspace, table }
                if rename.is_some() && selected.contains(&(keyspace.clone(), table.clone())) =>
            {
                p.notes.push(format!(
                    "secondary index of {keyspace}.{table} not created on the renamed table: {}",
                    st.cql
                ))
            }
            Object::View { keyspace, base, .. }
                if whole && fresh.contains(&(keyspace.clone(), base.clone())) =>
            {
                p.run.push(schema::if_not_exists(&st.cql))
            }
            Object::Other { keyspace } if whole && new_ks.contains(&keyspace.as_str()) => {
                p.run.push(schema::if_not_exists(&st.cql))
            }
            _ => {}
        }
    }
    Ok(p)
}
