//! Everything Cassandra is told: node yaml, logback files, JVM options, and
//! tokens. Kept in one place so what a test cluster runs with is readable at once.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use super::{Info, NodeInfo};

/// Heap per node. 24 GiB of RAM holds 8 such JVMs easily; the 2 cores are the
/// limit, not memory.
pub const HEAP_MB: u32 = 768;
/// Ring delay of the initial nodes: short, so a cluster starts fast. They
/// never bootstrap (tokens assigned, `auto_bootstrap: false`), so nothing
/// depends on what they learn from gossip within it.
pub const RING_DELAY_MS: u32 = 2000;
/// Ring delay of a node that bootstraps: Cassandra's own default. Before it
/// streams, a joining node waits at most this long for a non-system schema
/// (`waitForSchema`), and its schema-agreement wait after that only covers
/// peers whose gossip state it already has. With 2 s, on 2 busy cores, the
/// peers' gossip state arrived after the wait, the node planned its
/// streaming with only the system keyspaces, streamed nothing and joined
/// with an empty table ("Executing streaming plan for Bootstrap" followed at
/// once by "Bootstrap completed", and the user schema pulled a second
/// later). The wait ends as soon as the schema is there; the other use, the
/// sleep that lets every coordinator learn the new node's pending ranges
/// before streaming starts (so writes during the join reach it too), needs
/// the full delay on a real cluster as well.
pub const JOIN_RING_DELAY_MS: u32 = 30_000;
pub const DATACENTER: &str = "datacenter1";

/// `-Djdk.attach...`, `--add-exports`, `--add-opens` from Cassandra 5.0's
/// conf/jvm17-server.options (JDK 17 refuses Cassandra's reflection otherwise).
const JDK17_SERVER: &[&str] = &[
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
];

/// The same for client tools (conf/jvm17-clients.options).
const JDK17_CLIENTS: &[&str] = &[
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-exports=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.math=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
];

/// JVM arguments for a node, up to and including the main class.
/// `joining`: the node bootstraps into a running cluster. Other nodes skip
/// the endpoint-collision shadow round, which fails when the seed is itself
/// still starting (and a fresh address in a fresh cluster cannot collide).
pub fn node_jvm_args(info: &Info, node: &NodeInfo, joining: bool) -> Vec<String> {
    let dir = node_dir(node);
    let mut args = vec![
        format!("-Xms{HEAP_MB}M"),
        format!("-Xmx{HEAP_MB}M"),
        // Serial GC: least CPU on 2 shared cores, and pauses on a 768 MB heap
        // stay far below gossip's failure-detector threshold.
        "-XX:+UseSerialGC".into(),
        "-XX:CICompilerCount=2".into(),
        "-Xss512k".into(),
        format!("-javaagent:{}", jamm(info).display()),
        "-Djava.net.preferIPv4Stack=true".into(),
        format!("-Dcassandra.jmx.local.port={}", node.jmx_port),
        format!("-Dcassandra.config=file://{}", node.config.display()),
        "-Dcassandra-foreground=yes".into(),
        format!("-Dcassandra.storagedir={}", dir.display()),
        format!("-Dcassandra.logdir={}", dir.join("logs").display()),
        format!(
            "-Dlogback.configurationFile={}",
            dir.join("conf/logback.xml").display()
        ),
        format!(
            "-Dcassandra.ring_delay_ms={}",
            if joining {
                JOIN_RING_DELAY_MS
            } else {
                RING_DELAY_MS
            }
        ),
        "-Dcassandra.skip_wait_for_gossip_to_settle=0".into(),
        "-Dcassandra.boot_without_jna=true".into(),
        "-Dcassandra.superuser_setup_delay_ms=0".into(),
    ];
    // C1 only: a 3-node start on 2 busy cores took 23 s instead of 37 s.
    // Tests start clusters far more often than they load them hard; set
    // TESTBED_CASSANDRA_FULL_JIT=1 for throughput work (benchmarks).
    if std::env::var_os("TESTBED_CASSANDRA_FULL_JIT").is_none() {
        args.push("-XX:TieredStopAtLevel=1".into());
    }
    if !joining {
        args.push("-Dcassandra.allow_unsafe_join=true".into());
    }
    args.extend(JDK17_SERVER.iter().map(|s| s.to_string()));
    args.push("-cp".into());
    args.push(classpath(info));
    args.push("org.apache.cassandra.service.CassandraDaemon".into());
    args
}

/// JVM arguments for a client tool (nodetool, sstableloader): a JVM starts per
/// call, so a small heap and the quick C1-only JIT.
pub fn tool_jvm_args(info: &Info, tools_logback: &Path, with_jamm: bool) -> Vec<String> {
    let mut args = vec![
        "-Xmx256M".to_string(),
        "-XX:+UseSerialGC".into(),
        "-XX:TieredStopAtLevel=1".into(),
        "-Djava.net.preferIPv4Stack=true".into(),
        format!("-Dlogback.configurationFile={}", tools_logback.display()),
    ];
    if with_jamm {
        args.push(format!("-javaagent:{}", jamm(info).display()));
    }
    args.extend(JDK17_CLIENTS.iter().map(|s| s.to_string()));
    args.push("-cp".into());
    args.push(classpath(info));
    args
}

fn classpath(info: &Info) -> String {
    format!("{}/*", info.jars.display())
}

fn jamm(info: &Info) -> std::path::PathBuf {
    info.jars.join(super::JAMM_JAR)
}

pub fn node_dir(node: &NodeInfo) -> &Path {
    node.config
        .parent()
        .and_then(Path::parent)
        .expect("config lives in <node>/conf/")
}

/// Writes `<node>/conf/cassandra.yaml` and `logback.xml`, and creates the dirs.
pub fn write_node_files(info: &Info, node: &NodeInfo, auto_bootstrap: bool) -> Result<()> {
    for dir in [
        &node.data_dir,
        &node.commitlog_dir,
        &node.hints_dir,
        &node.saved_caches_dir,
        &node_dir(node).join("conf"),
    ] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(&node.config, yaml(info, node, auto_bootstrap))?;
    fs::write(node_dir(node).join("conf/logback.xml"), LOGBACK_NODE)?;
    Ok(())
}

fn yaml(info: &Info, node: &NodeInfo, auto_bootstrap: bool) -> String {
    let seeds = format!("{}:{}", info.nodes[0].address, info.storage_port);
    let tokens: Vec<String> = node.tokens.iter().map(i64::to_string).collect();
    let dir = node_dir(node);
    format!(
        "# Generated by testbed for node {n} of {name}.
cluster_name: '{cluster}'
num_tokens: {num_tokens}
initial_token: {tokens}
auto_bootstrap: {auto_bootstrap}
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: \"{seeds}\"
listen_address: {addr}
rpc_address: {addr}
storage_port: {storage}
native_transport_port: {native}
start_native_transport: true
data_file_directories:
  - {data}
commitlog_directory: {commitlog}
hints_directory: {hints}
saved_caches_directory: {caches}
cdc_raw_directory: {cdc}
commitlog_sync: periodic
commitlog_sync_period: 10000ms
# Two cores shared by every node on the machine: few threads each.
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 4
concurrent_compactors: 1
memtable_flush_writers: 1
key_cache_size: 16MiB
authenticator: AllowAllAuthenticator
# Several JVMs share 2 cores: a busy node must not be taken for a dead one,
# nor a slow reply for a failed request.
phi_convict_threshold: 12
read_request_timeout: 20000ms
write_request_timeout: 20000ms
range_request_timeout: 30000ms
counter_write_request_timeout: 20000ms
request_timeout: 30000ms
authorizer: AllowAllAuthorizer
",
        n = node.node,
        name = info.name,
        cluster = info.cluster_name,
        num_tokens = info.num_tokens,
        tokens = tokens.join(","),
        addr = node.address,
        storage = info.storage_port,
        native = info.native_port,
        data = node.data_dir.display(),
        commitlog = node.commitlog_dir.display(),
        hints = node.hints_dir.display(),
        caches = node.saved_caches_dir.display(),
        cdc = dir.join("cdc_raw").display(),
    )
}

/// Node log: INFO to stdout, which the testbed sends to the node's log file.
const LOGBACK_NODE: &str = r#"<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
"#;

/// Tools: warnings only, to stderr, so stdout carries just the tool's output.
pub const LOGBACK_TOOLS: &str = r#"<configuration scan="false">
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDERR"/></root>
</configuration>
"#;

/// Evenly spaced Murmur3 tokens, node `i` of `nodes` taking every
/// `nodes`-th one, so the initial ring is balanced without any allocation run.
pub fn initial_tokens(nodes: usize, num_tokens: usize) -> Vec<Vec<i64>> {
    let total = (nodes * num_tokens) as i128;
    let span: i128 = 1 << 64;
    let mut out = vec![Vec::new(); nodes];
    for i in 0..total {
        let token = i64::MIN as i128 + i * span / total;
        out[(i as usize) % nodes].push(token as i64);
    }
    out
}

/// Tokens for a joining node: the midpoints of the `count` largest gaps of
/// the current ring, so it takes a fair share from several owners.
pub fn split_tokens(existing: &[i64], count: usize) -> Vec<i64> {
    let mut ring: Vec<i128> = existing.iter().map(|&t| t as i128).collect();
    let mut new = Vec::new();
    for _ in 0..count {
        ring.sort_unstable();
        let n = ring.len();
        let span: i128 = 1 << 64;
        let (gap, at) = (0..n)
            .map(|i| {
                let next = if i + 1 < n {
                    ring[i + 1]
                } else {
                    ring[0] + span
                };
                (next - ring[i], i)
            })
            .max()
            .expect("ring is not empty");
        let mut mid = ring[at] + gap / 2;
        if mid > i64::MAX as i128 {
            mid -= span;
        }
        ring.push(mid);
        new.push(mid as i64);
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_balanced() {
        let t = initial_tokens(3, 4);
        let all: Vec<i64> = t.iter().flatten().copied().collect();
        assert_eq!(all.len(), 12);
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 12);
        assert_eq!(t[0][0], i64::MIN);
        let added = split_tokens(&all, 4);
        assert_eq!(added.len(), 4);
        assert!(added.iter().all(|a| !all.contains(a)));
        // With one token per node the newcomer halves the largest range.
        let wrap = split_tokens(&[i64::MIN, 0], 1);
        assert!(wrap[0] == i64::MIN / 2 || wrap[0] == i64::MAX / 2 + 1);
    }
}
