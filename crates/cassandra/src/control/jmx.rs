//! The JMX bridge: one small JVM per agent, connected to its node's JMX port,
//! answering line requests (see `TidemarkJmxBridge.java` for the protocol).
//!
//! Why a JVM at all: JMX speaks Java RMI (Java serialization), which has no
//! maintained Rust client, and Cassandra offers no CQL for snapshots or
//! imports. nodetool solves it with one JVM start per operation, about a
//! second of CPU each; a backup does four per node. The bridge is started
//! once with the agent and pays that cost once.
//!
//! The JVM runs in source-file mode from a file the agent writes into its
//! work dir, so nothing but a JDK is needed. Requests are serialised by a
//! mutex (one line out, one line back). A bridge that died or timed out is
//! killed and started again on the next request; the JVM itself reconnects
//! when the node restarted.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use crate::error::{CassandraError, Result};
use crate::nodetool::last_lines;

const SOURCE: &str = include_str!("TidemarkJmxBridge.java");
const SOURCE_NAME: &str = "TidemarkJmxBridge.java";

/// Where and how to reach the node's JMX.
#[derive(Clone)]
pub struct JmxSettings {
    pub host: String,
    pub port: u16,
    /// User and password (read from the password file at start).
    pub credentials: Option<(String, String)>,
    pub java: PathBuf,
    /// The bridge's own dir (source file and log).
    pub dir: PathBuf,
    /// The node's address, for error messages.
    pub node: String,
}

impl std::fmt::Debug for JmxSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JmxSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("java", &self.java)
            .finish_non_exhaustive()
    }
}

pub struct JmxBridge {
    settings: JmxSettings,
    process: Mutex<Option<Bridge>>,
}

struct Bridge {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// A request was sent and its reply not read: the caller's future was
    /// dropped mid-exchange (a client hung up). The next reply on the pipe
    /// would answer that request, so the bridge is replaced instead.
    in_flight: bool,
}

impl JmxBridge {
    /// Writes the bridge's source and starts it (it connects to the node on
    /// its first request, so an agent may start before its node).
    pub async fn start(settings: JmxSettings) -> Result<JmxBridge> {
        std::fs::create_dir_all(&settings.dir).map_err(|e| CassandraError::io(&settings.dir, e))?;
        let source = settings.dir.join(SOURCE_NAME);
        std::fs::write(&source, SOURCE).map_err(|e| CassandraError::io(&source, e))?;
        let bridge = JmxBridge {
            settings,
            process: Mutex::new(None),
        };
        *bridge.process.lock().await = Some(bridge.spawn().await?);
        Ok(bridge)
    }

    fn log_path(&self) -> PathBuf {
        self.settings.dir.join("bridge.log")
    }

    fn fail(&self, what: &str, reason: impl Into<String>) -> CassandraError {
        CassandraError::Node {
            node: self.settings.node.clone(),
            reason: format!(
                "JMX {what} ({}:{}): {}",
                self.settings.host,
                self.settings.port,
                reason.into()
            ),
        }
    }

    async fn spawn(&self) -> Result<Bridge> {
        let s = &self.settings;
        let log = std::fs::File::create(self.log_path())
            .map_err(|e| CassandraError::io(self.log_path(), e))?;
        let mut child = Command::new(&s.java)
            // Small and quick to start: it holds one connection and a few
            // strings; C1 only, serial GC, no perf data file.
            .args([
                "-Xms16m",
                "-Xmx64m",
                "-Xss512k",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
            ])
            .arg("-XX:-UsePerfData")
            .arg(s.dir.join(SOURCE_NAME))
            .current_dir(&s.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.fail("bridge", format!("cannot start {}: {e}", s.java.display())))?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(self.fail("bridge", "no pipes to the bridge process"));
        };
        let (user, password) = s.credentials.clone().unwrap_or_default();
        let first = format!(
            "{}\t{}\t{}\t{}\n",
            escape(&s.host),
            s.port,
            escape(&user),
            escape(&password)
        );
        stdin
            .write_all(first.as_bytes())
            .await
            .map_err(|e| self.fail("bridge", format!("writing to the bridge: {e}")))?;
        Ok(Bridge {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            in_flight: false,
        })
    }

    /// One request; the reply's payload, unescaped. `timeout` bounds the
    /// wait for the reply (None: as long as the node takes, e.g. a flush).
    pub async fn call(&self, fields: &[&str], timeout: Option<Duration>) -> Result<String> {
        let what = fields.first().copied().unwrap_or("request");
        let mut guard = self.process.lock().await;
        if let Some(b) = guard.as_mut() {
            if b.in_flight || !matches!(b.child.try_wait(), Ok(None)) {
                *guard = None;
            }
        }
        if guard.is_none() {
            *guard = Some(self.spawn().await?);
        }
        let bridge = guard.as_mut().expect("just set");
        let line = fields
            .iter()
            .map(|f| escape(f))
            .collect::<Vec<_>>()
            .join("\t")
            + "\n";
        let exchange = async {
            bridge.in_flight = true;
            bridge.stdin.write_all(line.as_bytes()).await?;
            bridge.stdin.flush().await?;
            let mut reply = String::new();
            bridge.stdout.read_line(&mut reply).await?;
            bridge.in_flight = false;
            Ok::<_, std::io::Error>(reply)
        };
        let reply = match timeout {
            Some(t) => tokio::time::timeout(t, exchange).await.map_err(|_| t),
            None => Ok(exchange.await),
        };
        let reply = match reply {
            Ok(Ok(r)) if r.ends_with('\n') => r,
            // Out of step or dead: start afresh next time.
            Ok(Ok(_)) | Ok(Err(_)) => {
                *guard = None;
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                return Err(self.fail(
                    what,
                    format!("the bridge process ended: {}", last_lines(&log, 15)),
                ));
            }
            Err(t) => {
                *guard = None;
                return Err(self.fail(
                    what,
                    format!("no reply in {} s (bridge restarted)", t.as_secs()),
                ));
            }
        };
        let reply = reply.trim_end_matches('\n');
        match reply.split_once('\t') {
            Some(("ok", payload)) => Ok(unescape(payload)),
            Some(("err", message)) => Err(self.fail(what, unescape(message))),
            _ => {
                *guard = None;
                Err(self.fail(what, format!("unreadable reply {reply:?}")))
            }
        }
    }

    /// The bridge's dir (source and log).
    pub fn dir(&self) -> &Path {
        &self.settings.dir
    }

    pub fn node(&self) -> &str {
        &self.settings.node
    }
}

/// Backslash, TAB, CR and LF inside a field, as the bridge reads them.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_survive_escaping() {
        for s in [
            "plain",
            "tab\there",
            "line\nbreak\r\n",
            "back\\slash\\t",
            "",
            "ünïcode",
        ] {
            let e = escape(s);
            assert!(!e.contains(['\t', '\n', '\r']), "{e:?}");
            assert_eq!(unescape(&e), s);
        }
    }
}
