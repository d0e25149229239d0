//! testbed: real local clusters (Cassandra, S3, ...) for tidemark's tests and CI.
//!
//! Parts:
//! - [`root`]: a state directory (`--root`, default /tmp/testbed) with a JSON
//!   state file of every started process, so `down`/`status` work from any process;
//! - [`process`]: spawning in its own process group, output to a log under the root,
//!   stopping a whole group (TERM, then KILL) without hitting a recycled pid;
//! - [`wait`]: readiness polling that prints the log tails when it gives up;
//! - [`net`]: free ports and free loopback address blocks;
//! - [`cache`]: the download cache (/var/cache/tidemark/downloads or
//!   `$TESTBED_CACHE`), filled once per machine, Maven fetches included;
//! - [`kind`]: the `Kind` enum and the single dispatch in [`kind::up`];
//! - [`fixture`]: one shared cluster per test binary, or one reused from CI;
//! - one module per kind: [`cassandra`], [`hdfs`], [`mongodb`] (FerretDB),
//!   [`redis`], [`etcd`], [`s3`] (SeaweedFS); [`http`] and [`fresh`] are small
//!   helpers they share.
//!
//! Environment: `TESTBED_ROOT` (default root), `TESTBED_CACHE` (download
//! cache), `TESTBED_KEEP` (fixtures keep their temporary root for post-mortems),
//! `TESTBED_CASSANDRA_ROOT` (tests reuse the Cassandra cluster started there),
//! `TESTBED_CASSANDRA_FULL_JIT` (C2 JIT for throughput work; slower start).
//!
//! # Plugging in a kind
//!
//! 1. Write `src/<kind>.rs` with
//!    `pub fn start(root: &Root, opts: &UpOptions) -> anyhow::Result<Info>`, where
//!    `Info: Serialize + Deserialize` is what a client needs (addresses, ports,
//!    directories). Inside it: `root.create_cluster(Kind::X, &opts.name_or(Kind::X))`,
//!    then for each server `process::spawn(name, cmd, &log, ports)` followed at
//!    once by `root.add_process(cluster, record)` (so a failed start is still
//!    cleaned up), then `wait::wait_for(...)` on a real readiness check (a port
//!    answering is rarely enough: ask the server). Ports from
//!    `net::free_port()`, downloads through `cache::ensure` / `cache::maven_jars`,
//!    files under `root.cluster_dir(cluster)`.
//! 2. Stopping is generic (`Root::stop_cluster`, `Root::down`); a kind needs
//!    its own `stop` only for extra work.
//! 3. In `kind.rs`: a variant in `Kind`, its name in `as_str` and `ALL`, and an
//!    arm in `kind::up`. `testbed up <kind>` and the fixtures then work.

pub mod cache;
pub mod cassandra;
pub mod cql;
pub mod etcd;
pub mod fixture;
pub mod fresh;
pub mod hdfs;
pub mod http;
pub mod kind;
pub mod mongodb;
pub mod net;
pub mod process;
pub mod redis;
pub mod root;
pub mod s3;
pub mod tidemark;
pub mod wait;

pub use kind::{Kind, UpOptions};
pub use root::Root;
