//! `testbed`: start, inspect and stop real local clusters for tests and CI.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use testbed::{cassandra, hdfs, kind, Kind, Root, UpOptions};

#[derive(Parser)]
#[command(about = "Real local clusters for tidemark's tests")]
struct Cli {
    /// State directory [default: $TESTBED_ROOT or /tmp/testbed]
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a cluster, wait until it is ready, print how to reach it (JSON)
    Up {
        kind: Kind,
        #[arg(long)]
        nodes: Option<usize>,
        /// Name inside the root (default: the kind); another name starts an
        /// independent second cluster
        #[arg(long)]
        name: Option<String>,
        /// Cassandra: one `tidemark agent` per node, a repository under the
        /// root and the coordinator file tidemark.toml
        #[arg(long)]
        with_agents: bool,
        /// The tidemark binary for --with-agents [default: $TIDEMARK_BIN, else
        /// `tidemark` next to this executable]
        #[arg(long, requires = "with_agents")]
        tidemark_bin: Option<PathBuf>,
        /// The agents' repository instead of one under the root: a path or
        /// `s3:http://HOST:PORT/BUCKET/PREFIX` (initialised if new; the
        /// agents inherit AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
        /// AWS_DEFAULT_REGION from this command's environment)
        #[arg(long, requires = "with_agents")]
        repository: Option<String>,
        /// HDFS: enforce permissions (off by default, so tests can act as
        /// any user)
        #[arg(long)]
        permissions: bool,
        /// HDFS with agents: the user tidemark acts as [default: the one
        /// running the NameNode, the HDFS superuser]
        #[arg(long, requires = "with_agents")]
        tidemark_user: Option<String>,
    },
    /// Stop everything started under the root (or one cluster with --name)
    Down {
        #[arg(long)]
        name: Option<String>,
    },
    /// Processes under the root and whether they run
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print a cluster's connection info (JSON)
    Info {
        #[arg(long, default_value = "cassandra")]
        name: String,
    },
    /// Run nodetool against one node: testbed nodetool --node 1 -- status
    Nodetool {
        #[arg(long, default_value = "cassandra")]
        name: String,
        #[arg(long, default_value_t = 1)]
        node: usize,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run sstableloader against a cluster: testbed sstableloader -- DIR
    Sstableloader {
        #[arg(long, default_value = "cassandra")]
        name: String,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run CQL statements (separated by `;`) at QUORUM; prints SELECT rows
    Cql {
        #[arg(long, default_value = "cassandra")]
        name: String,
        #[arg(last = true, required = true)]
        script: Vec<String>,
    },
    /// Run a Hadoop client tool against an HDFS cluster (fs = `hdfs dfs`,
    /// dfsadmin = `hdfs dfsadmin`): testbed hdfs-cli -- -ls -R /
    HdfsCli {
        #[arg(long, default_value = "hdfs")]
        name: String,
        #[arg(long, default_value = "fs")]
        class: hdfs::tools::Class,
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Run DistCp in local MapReduce mode as a client of an HDFS cluster:
    /// testbed distcp -- -update /data/.snapshot/s1 hdfs://127.0.0.1:PORT/data
    Distcp {
        #[arg(long, default_value = "hdfs")]
        name: String,
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Change a running Cassandra cluster
    Cassandra {
        #[arg(long, default_value = "cassandra")]
        name: String,
        #[command(subcommand)]
        action: CassandraCmd,
    },
}

// The command names (add-node, stop-node, ...) are the interface.
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand)]
enum CassandraCmd {
    /// Add a node that bootstraps into the cluster; prints the node (JSON)
    AddNode,
    /// Stop node N cleanly
    StopNode { node: usize },
    /// Start node N again and wait until it is Up/Normal
    StartNode { node: usize },
    /// Stop node N's tidemark agent (the node keeps running)
    StopAgent { node: usize },
    /// Start node N's tidemark agent again and wait until it answers
    StartAgent { node: usize },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("testbed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let root = Root::new(cli.root.unwrap_or_else(Root::default_dir))?;
    match cli.command {
        Cmd::Up {
            kind,
            nodes,
            name,
            with_agents,
            tidemark_bin,
            repository,
            permissions,
            tidemark_user,
        } => {
            if with_agents && !matches!(kind, Kind::Cassandra | Kind::Hdfs | Kind::Mongodb) {
                anyhow::bail!("--with-agents applies to cassandra, hdfs and mongodb, not {kind}");
            }
            let opts = UpOptions {
                name,
                nodes,
                with_agents,
                tidemark_bin,
                repository,
                permissions,
                tidemark_user,
            };
            let info = kind::up(kind, &root, &opts)?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        Cmd::Down { name: Some(name) } => root.stop_cluster(&name)?,
        Cmd::Down { name: None } => root.down()?,
        Cmd::Status { json } => {
            let status = root.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                for p in status {
                    let state = if p.alive { "running" } else { "stopped" };
                    println!(
                        "{}/{} {} pid {} {state} ports {:?} log {}",
                        p.cluster,
                        p.name,
                        p.kind,
                        p.pid,
                        p.ports,
                        p.log.display()
                    );
                }
            }
        }
        Cmd::Info { name } => {
            let info = root.cluster(&name)?.info.context("cluster is not ready")?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        Cmd::Nodetool { name, node, args } => {
            let info: cassandra::Info = root.info(&name)?;
            return passthrough(cassandra::nodetool(&info, node, &args)?);
        }
        Cmd::Sstableloader { name, args } => {
            let info: cassandra::Info = root.info(&name)?;
            return passthrough(cassandra::sstableloader(&info, &args)?);
        }
        Cmd::Cql { name, script } => {
            let info: cassandra::Info = root.info(&name)?;
            for line in testbed::cql::run(&info, &script.join(" "))? {
                println!("{line}");
            }
        }
        Cmd::HdfsCli { name, class, args } => {
            let info: hdfs::Info = root.info(&name)?;
            return exit_like(hdfs::tools::shell(&info, class, &args)?);
        }
        Cmd::Distcp { name, args } => {
            let info: hdfs::Info = root.info(&name)?;
            return exit_like(hdfs::tools::distcp(&info, &args)?);
        }
        Cmd::Cassandra { name, action } => match action {
            CassandraCmd::AddNode => {
                let node = cassandra::add_node(&root, &name)?;
                println!("{}", serde_json::to_string_pretty(&node)?);
            }
            CassandraCmd::StopNode { node } => cassandra::stop_node(&root, &name, node)?,
            CassandraCmd::StartNode { node } => cassandra::start_node(&root, &name, node)?,
            CassandraCmd::StopAgent { node } => cassandra::stop_agent(&root, &name, node)?,
            CassandraCmd::StartAgent { node } => cassandra::start_agent(&root, &name, node)?,
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a tool on this process's stdio (long runs show their progress) and
/// exits with its status.
fn exit_like(mut cmd: std::process::Command) -> Result<ExitCode> {
    let status = cmd
        .status()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    let code = status.code().unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Hands a tool's output and exit status through unchanged.
fn passthrough(out: std::process::Output) -> Result<ExitCode> {
    use std::io::Write;
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    let code = out.status.code().unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
