//! The `tidemark` command.
//!
//! One file per command under `commands/`; `ctx.rs` opens the repository from
//! the global options; `progress.rs` draws a bar on a terminal and plain lines
//! otherwise. Exit codes: 0 success, 1 error, 3 incomplete (some files could
//! not be backed up or restored, or verify found damage), 10 no repository,
//! 12 wrong password.

mod commands;
mod ctx;
mod progress;

use clap::{Parser, Subcommand};

use ctx::Global;

#[derive(Parser)]
#[command(name = "tidemark", version, about = "Consistent, incremental-forever, encrypted backups")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository
    Init(commands::init::Args),
    /// Back up files and directories into a new snapshot
    Backup(commands::backup::Args),
    /// List snapshots
    Snapshots(commands::snapshots::Args),
    /// Restore a snapshot (or part of it) into a directory
    Restore(commands::restore::Args),
    /// List the files of a snapshot
    Ls(commands::ls::Args),
    /// Show what changed between two snapshots
    Diff(commands::diff::Args),
    /// Sizes of the repository: logical, unique, stored; dedup and compression ratios
    Stats(commands::stats::Args),
    /// Copy snapshots into another repository (which has its own keys)
    Copy(commands::copy::Args),
    /// Manage the passphrase keys of the repository
    #[command(subcommand)]
    Key(commands::key::KeyCommand),
    /// Remove stale locks (of processes that died)
    Unlock(commands::unlock::Args),
    /// Check the repository; name damaged objects and the files they spoil
    Verify(commands::verify::Args),
    /// Repair the repository (`repair index`: rebuild the index from the packs)
    #[command(subcommand)]
    Repair(commands::repair::RepairCommand),
    /// Remove snapshots by a retention policy (--keep-last, --keep-daily, ...)
    Forget(commands::forget::Args),
    /// Free the space of data no snapshot needs (safe beside running backups)
    Prune(commands::prune::Args),
    /// Run beside one Cassandra node: cut, upload and restore its data on the coordinator's request
    Agent(commands::agent::Args),
    /// Cluster backups: backup, list, restore, verify (see README)
    #[command(subcommand)]
    Cluster(commands::cluster::ClusterCommand),
    /// Measure the in-memory ceiling: chunk + hash + compress + encrypt
    BenchCeiling(commands::bench_ceiling::Args),
}

fn main() {
    let cli = Cli::parse();
    ctx::init_logging(cli.global.verbose);
    let result = match cli.command {
        Command::Init(a) => commands::init::run(&cli.global, a),
        Command::Backup(a) => commands::backup::run(&cli.global, a),
        Command::Snapshots(a) => commands::snapshots::run(&cli.global, a),
        Command::Restore(a) => commands::restore::run(&cli.global, a),
        Command::Ls(a) => commands::ls::run(&cli.global, a),
        Command::Diff(a) => commands::diff::run(&cli.global, a),
        Command::Stats(a) => commands::stats::run(&cli.global, a),
        Command::Copy(a) => commands::copy::run(&cli.global, a),
        Command::Key(a) => commands::key::run(&cli.global, a),
        Command::Unlock(a) => commands::unlock::run(&cli.global, a),
        Command::Verify(a) => commands::verify::run(&cli.global, a),
        Command::Repair(a) => commands::repair::run(&cli.global, a),
        Command::Forget(a) => commands::forget::run(&cli.global, a),
        Command::Prune(a) => commands::prune::run(&cli.global, a),
        Command::Agent(a) => commands::agent::run(&cli.global, a),
        Command::Cluster(a) => commands::cluster::run(&cli.global, a),
        Command::BenchCeiling(a) => commands::bench_ceiling::run(&cli.global, a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {}", ctx::one_line(&e));
            std::process::exit(ctx::exit_code(&e));
        }
    }
}
