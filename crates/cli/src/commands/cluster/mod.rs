//! `tidemark cluster ...`: the coordinator's commands, one file each.

pub mod backup;
pub mod config;
pub mod copy;
pub mod forget;
pub mod list;
pub mod mongodb;
pub mod restore;
pub mod verify;

use anyhow::Result;

use crate::ctx::Global;

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Take a consistent backup of the whole cluster; prints its id
    Backup(backup::Args),
    /// List the cluster's backups (from the catalog in the repository)
    List(list::Args),
    /// Restore a backup: the whole cluster, a keyspace or tables
    Restore(restore::Args),
    /// Check that a backup is complete and readable
    Verify(verify::Args),
    /// Forget whole backups: named ones, or those a keep policy does not keep
    Forget(forget::Args),
    /// Copy whole backups, manifest included, into another repository
    Copy(copy::Args),
}

pub fn run(g: &Global, c: ClusterCommand) -> Result<i32> {
    match c {
        ClusterCommand::Backup(a) => backup::run(g, a),
        ClusterCommand::List(a) => list::run(g, a),
        ClusterCommand::Restore(a) => restore::run(g, a),
        ClusterCommand::Verify(a) => verify::run(g, a),
        ClusterCommand::Forget(a) => forget::run(g, a),
        ClusterCommand::Copy(a) => copy::run(g, a),
    }
}
