//! One module per command: `Args` (clap) and `run(global, args) -> exit code`.

pub mod agent;
pub mod backup;
pub mod bench_ceiling;
pub mod cluster;
pub mod copy;
pub mod diff;
pub mod forget;
pub mod init;
pub mod key;
pub mod ls;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod snapshots;
pub mod stats;
pub mod unlock;
pub mod verify;
