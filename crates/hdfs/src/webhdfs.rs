//! A thin WebHDFS client: the operations tidemark needs, typed.
//!
//! No Rust client offers snapshots, snapshot diffs, ACLs and checksums over
//! WebHDFS (OpenDAL's and hdfs-native's stop at files), so this is ours.
//! Simple authentication only (`user.name=`); Kerberos (SPNEGO) is not built.
//!
//! High availability: every configured NameNode is tried in order until one
//! answers as active; a standby's `StandbyException` or a refused connection
//! moves on to the next, and the one that answered is tried first next time.
//! Redirects to DataNodes (OPEN, CREATE, GETFILECHECKSUM) are followed by
//! hand: a CREATE's body must go only to the DataNode, and an error must
//! name the server that sent it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{HdfsError, Result};

/// One entry of a listing (`FileStatus` as WebHDFS sends it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileStatus {
    /// The entry's name in a listing; empty for GETFILESTATUS.
    #[serde(default)]
    pub path_suffix: String,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    #[serde(default)]
    pub length: u64,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub group: String,
    /// Octal, with the sticky bit as a fourth digit ("1777").
    #[serde(default)]
    pub permission: String,
    #[serde(default)]
    pub access_time: i64,
    #[serde(default)]
    pub modification_time: i64,
    #[serde(default)]
    pub block_size: u64,
    #[serde(default)]
    pub replication: u16,
    /// The inode id: stable across renames, new for a re-created file.
    #[serde(default)]
    pub file_id: u64,
    #[serde(default)]
    pub children_num: Option<i64>,
    /// Storage policy id as the NameNode numbers them (0: unspecified).
    #[serde(default)]
    pub storage_policy: Option<u8>,
    #[serde(default)]
    pub acl_bit: bool,
    #[serde(default)]
    pub ec_bit: bool,
    /// Erasure-coding policy name, for erasure-coded files and directories.
    #[serde(default)]
    pub ec_policy: Option<String>,
    #[serde(default)]
    pub symlink: Option<String>,
    #[serde(default)]
    pub snapshot_enabled: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
}

impl FileStatus {
    /// Permission bits (sticky bit included) as a number.
    pub fn mode_bits(&self) -> u32 {
        u32::from_str_radix(&self.permission, 8).unwrap_or(0o755)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclStatus {
    /// Extended entries, e.g. "user:alice:rw-", "default:group::r-x".
    pub entries: Vec<String>,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub permission: String,
    #[serde(default, rename = "stickyBit")]
    pub sticky_bit: bool,
}

/// What GETFILECHECKSUM returns; the algorithm names the mode
/// (`COMPOSITE-CRC32C` does not depend on the block size,
/// `MD5-of-<n>MD5-of-<m>CRC32C` does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChecksum {
    pub algorithm: String,
    pub bytes: String,
    pub length: u64,
}

/// One page of GETSNAPSHOTDIFFLISTING, paths relative to the snapshot root.
#[derive(Debug, Clone, Default)]
pub struct DiffPage {
    pub created: Vec<String>,
    pub deleted: Vec<String>,
    pub modified: Vec<String>,
    /// (from, to) of renamed entries.
    pub renamed: Vec<(String, String)>,
    /// Where the next page starts; `None` at the end.
    pub next: Option<(String, i64)>,
}

/// A DataNode as the NameNode reports it (JMX `NameNodeInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataNode {
    /// `host:xferPort`, as block locations name it.
    pub name: String,
    /// `host:httpPort`, where WebHDFS redirects reads and writes.
    #[serde(default)]
    pub http: String,
    pub live: bool,
    pub capacity: u64,
    pub used: u64,
    pub remaining: u64,
    pub admin_state: String,
}

#[derive(Debug)]
pub struct WebHdfs {
    namenodes: Vec<String>,
    user: String,
    http: reqwest::Client,
    /// Index of the NameNode that answered last.
    active: AtomicUsize,
    timeout: Duration,
}

impl WebHdfs {
    pub fn new(namenodes: &[String], user: &str, timeout: Duration) -> WebHdfs {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .read_timeout(Duration::from_secs(120))
            .build()
            .expect("HTTP client builds");
        WebHdfs {
            namenodes: namenodes.iter().map(|n| n.trim_end_matches('/').to_string()).collect(),
            user: user.to_string(),
            http,
            active: AtomicUsize::new(0),
            timeout,
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The NameNode that answered last (the active one, after a call).
    pub fn active_namenode(&self) -> &str {
        &self.namenodes[self.active.load(Ordering::Relaxed) % self.namenodes.len()]
    }

    fn url(&self, nn: &str, path: &str, op: &str, params: &[(&str, String)]) -> Result<reqwest::Url> {
        let mut url = reqwest::Url::parse(&format!("{nn}/webhdfs/v1/"))
            .map_err(|e| HdfsError::Invalid(format!("NameNode URL {nn}: {e}")))?;
        {
            let mut segs = url.path_segments_mut().expect("http URL has segments");
            segs.pop_if_empty();
            for s in path.split('/').filter(|s| !s.is_empty()) {
                segs.push(s);
            }
            if path.ends_with('/') || path.split('/').all(|s| s.is_empty()) {
                segs.push("");
            }
        }
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("op", op);
            q.append_pair("user.name", &self.user);
            for (k, v) in params {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Sends one NameNode request, trying the NameNodes from the active one
    /// on; returns the response of the first that is not a standby.
    async fn namenode(&self, method: Method, path: &str, op: &str, params: &[(&str, String)]) -> Result<reqwest::Response> {
        let first = self.active.load(Ordering::Relaxed);
        let mut why = Vec::new();
        for k in 0..self.namenodes.len() {
            let i = (first + k) % self.namenodes.len();
            let nn = &self.namenodes[i];
            let url = self.url(nn, path, op, params)?;
            let resp = match self.http.request(method.clone(), url).timeout(self.timeout).send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() || e.is_timeout() => {
                    why.push(format!("{nn}: {e}"));
                    continue;
                }
                Err(source) => return Err(HdfsError::Http { op: op.into(), path: path.into(), source }),
            };
            if resp.status() == StatusCode::FORBIDDEN {
                // A standby answers 403 with a StandbyException; read it and
                // try the next one.
                let text = resp.text().await.unwrap_or_default();
                let (exception, message) = remote_exception(&text);
                if exception == "StandbyException" {
                    why.push(format!("{nn}: standby"));
                    continue;
                }
                self.active.store(i, Ordering::Relaxed);
                return Err(HdfsError::Remote { op: op.into(), path: path.into(), status: 403, exception, message });
            }
            self.active.store(i, Ordering::Relaxed);
            return Ok(resp);
        }
        Err(HdfsError::NoNameNode(why.join("; ")))
    }

    async fn json<T: DeserializeOwned>(&self, method: Method, path: &str, op: &str, params: &[(&str, String)]) -> Result<T> {
        let resp = self.namenode(method, path, op, params).await?;
        let resp = self.follow(resp, op, path).await?;
        read_json(resp, op, path).await
    }

    /// Follows one redirect to a DataNode (GET operations it serves).
    async fn follow(&self, resp: reqwest::Response, op: &str, path: &str) -> Result<reqwest::Response> {
        if resp.status() != StatusCode::TEMPORARY_REDIRECT {
            return Ok(resp);
        }
        let location = location(&resp, op, path)?;
        self.http
            .get(location)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|source| HdfsError::Http { op: op.into(), path: path.into(), source })
    }

    pub async fn status(&self, path: &str) -> Result<FileStatus> {
        let v: Value = self.json(Method::GET, path, "GETFILESTATUS", &[]).await?;
        field(v, "FileStatus", "GETFILESTATUS", path)
    }

    /// One page of a directory listing, after `start_after` (a name);
    /// returns the entries and whether more remain.
    pub async fn list_page(&self, path: &str, start_after: Option<&str>) -> Result<(Vec<FileStatus>, bool)> {
        let mut params = Vec::new();
        if let Some(s) = start_after {
            params.push(("startAfter", s.to_string()));
        }
        let v: Value = self.json(Method::GET, path, "LISTSTATUS_BATCH", &params).await?;
        let remaining = v.pointer("/DirectoryListing/remainingEntries").and_then(Value::as_u64).unwrap_or(0);
        let entries = v
            .pointer("/DirectoryListing/partialListing/FileStatuses/FileStatus")
            .cloned()
            .unwrap_or(Value::Array(vec![]));
        let entries: Vec<FileStatus> = serde_json::from_value(entries)
            .map_err(|e| bad("LISTSTATUS_BATCH", path, format!("listing does not parse: {e}")))?;
        Ok((entries, remaining > 0))
    }

    /// A whole directory listing, page by page (each page is bounded by the
    /// NameNode's `dfs.ls.limit`, 1000 by default).
    pub async fn list(&self, path: &str) -> Result<Vec<FileStatus>> {
        let mut out: Vec<FileStatus> = Vec::new();
        loop {
            let after = out.last().map(|s| s.path_suffix.clone());
            let (page, more) = self.list_page(path, after.as_deref()).await?;
            let empty = page.is_empty();
            out.extend(page);
            if !more || empty {
                return Ok(out);
            }
        }
    }

    pub async fn acl(&self, path: &str) -> Result<AclStatus> {
        let v: Value = self.json(Method::GET, path, "GETACLSTATUS", &[]).await?;
        field(v, "AclStatus", "GETACLSTATUS", path)
    }

    /// Every xattr the user may read, values hex-encoded (`0x...`).
    pub async fn xattrs(&self, path: &str) -> Result<Vec<(String, String)>> {
        let v: Value = self.json(Method::GET, path, "GETXATTRS", &[("encoding", "hex".into())]).await?;
        let mut out = Vec::new();
        for x in v.get("XAttrs").and_then(Value::as_array).into_iter().flatten() {
            let name = x.get("name").and_then(Value::as_str).unwrap_or_default();
            let value = x.get("value").and_then(Value::as_str).unwrap_or("0x");
            out.push((name.to_string(), value.to_string()));
        }
        Ok(out)
    }

    pub async fn checksum(&self, path: &str) -> Result<FileChecksum> {
        let v: Value = self.json(Method::GET, path, "GETFILECHECKSUM", &[]).await?;
        field(v, "FileChecksum", "GETFILECHECKSUM", path)
    }

    /// `host:xferPort` of the DataNodes holding each block, by block.
    pub async fn block_locations(&self, path: &str, length: u64) -> Result<Vec<Vec<String>>> {
        let v: Value = self
            .json(Method::GET, path, "GETFILEBLOCKLOCATIONS", &[("offset", "0".into()), ("length", length.to_string())])
            .await?;
        let blocks = v.pointer("/BlockLocations/BlockLocation").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(blocks
            .iter()
            .map(|b| {
                b.get("names")
                    .and_then(Value::as_array)
                    .map(|n| n.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Storage policy name of an entry ("HOT", ...), as set or inherited.
    pub async fn storage_policy(&self, path: &str) -> Result<String> {
        let v: Value = self.json(Method::GET, path, "GETSTORAGEPOLICY", &[]).await?;
        Ok(v.pointer("/BlockStoragePolicy/name").and_then(Value::as_str).unwrap_or_default().to_string())
    }

    /// Every storage policy the cluster knows: id -> name.
    pub async fn all_storage_policies(&self) -> Result<Vec<(u8, String)>> {
        let v: Value = self.json(Method::GET, "/", "GETALLSTORAGEPOLICY", &[]).await?;
        let list = v.pointer("/BlockStoragePolicies/BlockStoragePolicy").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(list
            .iter()
            .filter_map(|p| {
                let id = u8::try_from(p.get("id")?.as_u64()?).ok()?;
                Some((id, p.get("name")?.as_str()?.to_string()))
            })
            .collect())
    }

    /// Namespace and space quota of a directory (-1: none).
    pub async fn quota(&self, path: &str) -> Result<(i64, i64)> {
        let v: Value = self.json(Method::GET, path, "GETQUOTAUSAGE", &[]).await?;
        let q = v.get("QuotaUsage").cloned().unwrap_or_default();
        Ok((q.get("quota").and_then(Value::as_i64).unwrap_or(-1), q.get("spaceQuota").and_then(Value::as_i64).unwrap_or(-1)))
    }

    /// Opens `path` for reading `length` bytes from the start; the body is
    /// streamed from the DataNode the NameNode chose (close to the caller).
    ///
    /// `exclude` names DataNodes (`host:xferPort`) the NameNode must not
    /// send the read to: ones that failed an earlier try. On error, the
    /// DataNode tried (its HTTP address) comes with it, when there was one.
    pub async fn open(&self, path: &str, length: u64, exclude: &[String]) -> Result<reqwest::Response, (HdfsError, Option<String>)> {
        let mut params = vec![("offset", "0".to_string()), ("length", length.to_string())];
        if !exclude.is_empty() {
            params.push(("excludedatanodes", exclude.join(",")));
        }
        let resp = self.namenode(Method::GET, path, "OPEN", &params).await.map_err(|e| (e, None))?;
        if resp.status() != StatusCode::TEMPORARY_REDIRECT {
            return ok(resp, "OPEN", path).await.map_err(|e| (e, None));
        }
        let location = location(&resp, "OPEN", path).map_err(|e| (e, None))?;
        let datanode = reqwest::Url::parse(&location).ok().and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port()?)));
        // No overall timeout: the body of a big file streams for as long as
        // it takes; a stalled one is caught by the client's read timeout.
        let sent = self.http.get(&location).send().await;
        let resp = sent.map_err(|source| (HdfsError::Http { op: "OPEN".into(), path: path.into(), source }, datanode.clone()))?;
        ok(resp, "OPEN", path).await.map_err(|e| (e, datanode))
    }

    /// Creates (or with `overwrite` replaces) a file with `body`: the
    /// NameNode names a DataNode, the bytes go to it.
    ///
    /// `exclude` as for [`WebHdfs::open`]; a DataNode that could not be
    /// reached comes with the error (`Some(http address)`), and then nothing
    /// was created.
    pub async fn create(
        &self,
        path: &str,
        opts: &CreateOptions,
        body: reqwest::Body,
        exclude: &[String],
    ) -> Result<(), (HdfsError, Option<String>)> {
        let mut params = vec![
            ("overwrite", opts.overwrite.to_string()),
            ("permission", format!("{:o}", opts.permission & 0o1777)),
        ];
        if let Some(r) = opts.replication {
            params.push(("replication", r.to_string()));
        }
        if let Some(b) = opts.block_size {
            params.push(("blocksize", b.to_string()));
        }
        if !exclude.is_empty() {
            params.push(("excludedatanodes", exclude.join(",")));
        }
        let resp = self.namenode(Method::PUT, path, "CREATE", &params).await.map_err(|e| (e, None))?;
        if resp.status() != StatusCode::TEMPORARY_REDIRECT {
            ok(resp, "CREATE", path).await.map_err(|e| (e, None))?;
            return Err((bad("CREATE", path, "the NameNode named no DataNode".into()), None));
        }
        let location = location(&resp, "CREATE", path).map_err(|e| (e, None))?;
        let datanode = reqwest::Url::parse(&location).ok().and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port()?)));
        // No overall timeout: a big file takes as long as it takes; a stall
        // is caught by the connection's own errors.
        let sent = self
            .http
            .put(location)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(source) => {
                let unreached = source.is_connect();
                let e = HdfsError::Http { op: "CREATE".into(), path: path.into(), source };
                return Err((e, if unreached { datanode } else { None }));
            }
        };
        ok(resp, "CREATE", path).await.map_err(|e| (e, None))?;
        Ok(())
    }

    async fn put(&self, path: &str, op: &str, params: &[(&str, String)]) -> Result<Value> {
        let resp = self.namenode(Method::PUT, path, op, params).await?;
        let resp = ok(resp, op, path).await?;
        let text = resp.text().await.map_err(|source| HdfsError::Http { op: op.into(), path: path.into(), source })?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn mkdirs(&self, path: &str, permission: u32) -> Result<()> {
        self.put(path, "MKDIRS", &[("permission", format!("{:o}", permission & 0o1777))]).await.map(drop)
    }

    pub async fn set_owner(&self, path: &str, owner: &str, group: &str) -> Result<()> {
        self.put(path, "SETOWNER", &[("owner", owner.into()), ("group", group.into())]).await.map(drop)
    }

    pub async fn set_permission(&self, path: &str, permission: u32) -> Result<()> {
        self.put(path, "SETPERMISSION", &[("permission", format!("{:o}", permission & 0o1777))]).await.map(drop)
    }

    /// Times in milliseconds since the epoch.
    pub async fn set_times(&self, path: &str, mtime_ms: i64, atime_ms: i64) -> Result<()> {
        self.put(path, "SETTIMES", &[("modificationtime", mtime_ms.to_string()), ("accesstime", atime_ms.to_string())])
            .await
            .map(drop)
    }

    pub async fn set_replication(&self, path: &str, replication: u16) -> Result<()> {
        self.put(path, "SETREPLICATION", &[("replication", replication.to_string())]).await.map(drop)
    }

    /// Adds ACL entries (`user:alice:rw-,default:group::r-x`).
    pub async fn modify_acl(&self, path: &str, spec: &str) -> Result<()> {
        self.put(path, "MODIFYACLENTRIES", &[("aclspec", spec.into())]).await.map(drop)
    }

    pub async fn remove_acl(&self, path: &str) -> Result<()> {
        self.put(path, "REMOVEACL", &[]).await.map(drop)
    }

    /// Sets one xattr; `value` hex-encoded (`0x...`).
    pub async fn set_xattr(&self, path: &str, name: &str, value: &str, replace: bool) -> Result<()> {
        let flag = if replace { "REPLACE" } else { "CREATE" };
        self.put(path, "SETXATTR", &[("xattr.name", name.into()), ("xattr.value", value.into()), ("flag", flag.into())])
            .await
            .map(drop)
    }

    pub async fn set_storage_policy(&self, path: &str, policy: &str) -> Result<()> {
        self.put(path, "SETSTORAGEPOLICY", &[("storagepolicy", policy.into())]).await.map(drop)
    }

    pub async fn set_ec_policy(&self, path: &str, policy: &str) -> Result<()> {
        self.put(path, "SETECPOLICY", &[("ecpolicy", policy.into())]).await.map(drop)
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<bool> {
        let v = self.put(from, "RENAME", &[("destination", to.into())]).await?;
        Ok(v.get("boolean").and_then(Value::as_bool).unwrap_or(false))
    }

    pub async fn allow_snapshot(&self, path: &str) -> Result<()> {
        self.put(path, "ALLOWSNAPSHOT", &[]).await.map(drop)
    }

    /// Creates snapshot `name` of a snapshottable directory; returns its path.
    pub async fn create_snapshot(&self, path: &str, name: &str) -> Result<String> {
        let v = self.put(path, "CREATESNAPSHOT", &[("snapshotname", name.into())]).await?;
        Ok(v.get("Path").and_then(Value::as_str).map_or_else(|| format!("{path}/.snapshot/{name}"), str::to_string))
    }

    pub async fn delete_snapshot(&self, path: &str, name: &str) -> Result<()> {
        let resp = self.namenode(Method::DELETE, path, "DELETESNAPSHOT", &[("snapshotname", name.into())]).await?;
        ok(resp, "DELETESNAPSHOT", path).await.map(drop)
    }

    pub async fn delete(&self, path: &str, recursive: bool) -> Result<bool> {
        let resp = self.namenode(Method::DELETE, path, "DELETE", &[("recursive", recursive.to_string())]).await?;
        let v: Value = read_json(resp, "DELETE", path).await?;
        Ok(v.get("boolean").and_then(Value::as_bool).unwrap_or(false))
    }

    /// Names of the snapshots of a snapshottable directory.
    pub async fn snapshots(&self, path: &str) -> Result<Vec<String>> {
        let v: Value = self.json(Method::GET, path, "GETSNAPSHOTLIST", &[]).await?;
        let list = v.pointer("/SnapshotList").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(list
            .iter()
            .filter_map(|s| {
                let full = s.get("fullPath").and_then(Value::as_str)?;
                full.rsplit('/').next().map(str::to_string)
            })
            .collect())
    }

    /// One page of the difference between two snapshots of `root`.
    pub async fn diff_page(&self, root: &str, from: &str, to: &str, start: Option<&(String, i64)>) -> Result<DiffPage> {
        let mut params = vec![("oldsnapshotname", from.to_string()), ("snapshotname", to.to_string())];
        let (p, i) = start.cloned().unwrap_or((String::new(), -1));
        params.push(("snapshotdiffstartpath", p));
        params.push(("snapshotdiffindex", i.to_string()));
        let v: Value = self.json(Method::GET, root, "GETSNAPSHOTDIFFLISTING", &params).await?;
        parse_diff_page(&v).map_err(|reason| bad("GETSNAPSHOTDIFFLISTING", root, reason))
    }

    /// One bean of the NameNode's JMX servlet (`/jmx?qry=...`).
    pub async fn jmx(&self, bean: &str) -> Result<Value> {
        let nn = self.active_namenode().to_string();
        let url = format!("{nn}/jmx?qry={bean}");
        let resp = self
            .http
            .get(&url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|source| HdfsError::Http { op: "JMX".into(), path: bean.into(), source })?;
        let v: Value = read_json(resp, "JMX", bean).await?;
        Ok(v.pointer("/beans/0").cloned().unwrap_or(Value::Null))
    }

    /// The configuration the active NameNode serves (`/conf`, XML).
    pub async fn conf(&self) -> Result<String> {
        let nn = self.active_namenode().to_string();
        let resp = self
            .http
            .get(format!("{nn}/conf"))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|source| HdfsError::Http { op: "CONF".into(), path: "/conf".into(), source })?;
        let resp = ok(resp, "CONF", "/conf").await?;
        resp.text().await.map_err(|source| HdfsError::Http { op: "CONF".into(), path: "/conf".into(), source })
    }

    /// Every DataNode the NameNode knows, live and dead.
    pub async fn datanodes(&self) -> Result<Vec<DataNode>> {
        let info = self.jmx("Hadoop:service=NameNode,name=NameNodeInfo").await?;
        let mut out = Vec::new();
        for (key, live) in [("LiveNodes", true), ("DeadNodes", false)] {
            let text = info.get(key).and_then(Value::as_str).unwrap_or("{}");
            let map: serde_json::Map<String, Value> = serde_json::from_str(text).unwrap_or_default();
            for (host, d) in map {
                let name = d.get("xferaddr").and_then(Value::as_str).map_or(host.clone(), str::to_string);
                out.push(DataNode {
                    name,
                    http: d.get("infoAddr").and_then(Value::as_str).unwrap_or_default().to_string(),
                    live,
                    capacity: d.get("capacity").and_then(Value::as_u64).unwrap_or(0),
                    used: d.get("usedSpace").and_then(Value::as_u64).unwrap_or(0),
                    remaining: d.get("remaining").and_then(Value::as_u64).unwrap_or(0),
                    admin_state: d.get("adminState").and_then(Value::as_str).unwrap_or_default().to_string(),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// How [`WebHdfs::create`] makes a file.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub overwrite: bool,
    pub permission: u32,
    pub replication: Option<u16>,
    pub block_size: Option<u64>,
}

fn bad(op: &str, path: &str, reason: String) -> HdfsError {
    HdfsError::BadReply { op: op.into(), path: path.into(), reason }
}

fn location(resp: &reqwest::Response, op: &str, path: &str) -> Result<String> {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| bad(op, path, "redirect without a Location".into()))
}

/// The exception class and message of a WebHDFS error body.
fn remote_exception(text: &str) -> (String, String) {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let e = v.get("RemoteException");
    let get = |k: &str| e.and_then(|e| e.get(k)).and_then(Value::as_str).map(str::to_string);
    match (get("exception"), get("message")) {
        (Some(x), m) => (x, m.unwrap_or_default()),
        (None, _) => ("HTTP error".into(), text.chars().take(300).collect()),
    }
}

/// The response if it succeeded, else its remote exception as an error.
async fn ok(resp: reqwest::Response, op: &str, path: &str) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let (exception, message) = remote_exception(&text);
    Err(HdfsError::Remote { op: op.into(), path: path.into(), status: status.as_u16(), exception, message })
}

async fn read_json<T: DeserializeOwned>(resp: reqwest::Response, op: &str, path: &str) -> Result<T> {
    let resp = ok(resp, op, path).await?;
    let text = resp.text().await.map_err(|source| HdfsError::Http { op: op.into(), path: path.into(), source })?;
    serde_json::from_str(&text).map_err(|e| bad(op, path, format!("{e}: {}", text.chars().take(200).collect::<String>())))
}

fn field<T: DeserializeOwned>(mut v: Value, key: &str, op: &str, path: &str) -> Result<T> {
    let inner = v.get_mut(key).map(Value::take).ok_or_else(|| bad(op, path, format!("no {key} in the reply")))?;
    serde_json::from_value(inner).map_err(|e| bad(op, path, format!("{key} does not parse: {e}")))
}

/// Paths in a diff listing entry: `sourcePath` (and `targetPath` for a
/// rename), relative to the snapshot root, `/`-joined.
fn parse_diff_page(v: &Value) -> std::result::Result<DiffPage, String> {
    let r = v.get("SnapshotDiffReportListing").ok_or("no SnapshotDiffReportListing")?;
    let path_of = |e: &Value, k: &str| -> Option<String> { e.get(k).and_then(Value::as_str).map(|s| s.trim_start_matches('/').to_string()) };
    let mut page = DiffPage::default();
    let list = |k: &str| r.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    // A rename is listed once, with a `targetPath` (in the delete list as
    // this NameNode sends it); changes inside a renamed directory are named
    // by their path in the earlier snapshot.
    for (k, bucket) in [("createList", 0), ("deleteList", 1), ("modifyList", 2)] {
        for e in list(k) {
            match (path_of(&e, "sourcePath"), path_of(&e, "targetPath")) {
                (Some(s), Some(t)) => page.renamed.push((s, t)),
                (Some(s), None) => [&mut page.created, &mut page.deleted, &mut page.modified][bucket].push(s),
                _ => {}
            }
        }
    }
    let last_path = r.get("lastPath").and_then(Value::as_str).unwrap_or_default().to_string();
    let last_index = r.get("lastIndex").and_then(Value::as_i64).unwrap_or(-1);
    if !last_path.is_empty() || last_index != -1 {
        page.next = Some((last_path, last_index));
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_segment_by_segment() {
        let w = WebHdfs::new(&["http://nn:9870/".into()], "hdfs", Duration::from_secs(1));
        let u = w.url("http://nn:9870", "/data/a b/ü?#%/x", "LISTSTATUS", &[("startAfter", "a&b".into())]).unwrap();
        assert_eq!(
            u.as_str(),
            "http://nn:9870/webhdfs/v1/data/a%20b/%C3%BC%3F%23%25/x?op=LISTSTATUS&user.name=hdfs&startAfter=a%26b"
        );
        let root = w.url("http://nn:9870", "/", "GETFILESTATUS", &[]).unwrap();
        assert_eq!(root.path(), "/webhdfs/v1/");
    }

    #[test]
    fn a_diff_page_as_hadoop_3_5_sends_it() {
        // GETSNAPSHOTDIFFLISTING after: overwrite "dir b/f", rename "dir b" to "dir c".
        let v: Value = serde_json::from_str(r#"{"SnapshotDiffReportListing":{"createList":[{"dirId":16386,"fileId":16387,"isReference":true,"sourcePath":"dir c"},{"dirId":16387,"fileId":16402,"isReference":false,"sourcePath":"dir b/f"}],"deleteList":[{"dirId":16386,"fileId":16387,"isReference":true,"sourcePath":"dir b","targetPath":"dir c"},{"dirId":16387,"fileId":16390,"isReference":false,"sourcePath":"dir b/f"}],"isFromEarlier":true,"lastIndex":-1,"lastPath":"","modifyList":[{"dirId":16386,"fileId":16386,"isReference":true,"sourcePath":""}]}}"#).unwrap();
        let p = parse_diff_page(&v).unwrap();
        assert_eq!(p.renamed, vec![("dir b".to_string(), "dir c".to_string())]);
        assert_eq!(p.created, vec!["dir c".to_string(), "dir b/f".to_string()]);
        assert_eq!(p.deleted, vec!["dir b/f".to_string()]);
        assert_eq!(p.modified, vec![String::new()]);
        assert!(p.next.is_none());
    }

    #[test]
    fn remote_exceptions_are_read() {
        let (x, m) = remote_exception(r#"{"RemoteException":{"exception":"SnapshotException","javaClassName":"x","message":"Directory is not a snapshottable directory: /d"}}"#);
        assert_eq!(x, "SnapshotException");
        assert!(m.contains("not a snapshottable"));
        let (x, _) = remote_exception("<html>oops</html>");
        assert_eq!(x, "HTTP error");
    }
}
