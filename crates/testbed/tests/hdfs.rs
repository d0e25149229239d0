//! HDFS through WebHDFS with a real HTTP client: files written and read back
//! with their blocks on every DataNode, and snapshots.

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::Value;
use testbed::fixture::SharedCell;
use testbed::hdfs::Info;
use testbed::Kind;

static HDFS: SharedCell = SharedCell::new(Kind::Hdfs, "TESTBED_HDFS_ROOT", None);

const USER: &str = "tidemark";

struct WebHdfs {
    base: String,
    /// WebHDFS answers writes with a redirect to a DataNode that must be
    /// followed by hand (the body goes only to the second request).
    client: Client,
}

impl WebHdfs {
    fn new() -> WebHdfs {
        let info: Info = HDFS.get().info();
        WebHdfs {
            base: format!("{}/webhdfs/v1", info.webhdfs),
            client: Client::builder()
                .redirect(Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    fn url(&self, path: &str, op: &str) -> String {
        format!("{}{path}?op={op}&user.name={USER}", self.base)
    }

    fn put_op(&self, path: &str, op: &str) -> (StatusCode, Value) {
        let resp = self.client.put(self.url(path, op)).send().unwrap();
        let status = resp.status();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn get_op(&self, path: &str, op: &str) -> Value {
        let resp = self.client.get(self.url(path, op)).send().unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {path} op={op}");
        resp.json().unwrap()
    }

    fn create(&self, path: &str, data: &[u8]) {
        let first = self
            .client
            .put(self.url(path, "CREATE&overwrite=true"))
            .send()
            .unwrap();
        assert_eq!(first.status(), StatusCode::TEMPORARY_REDIRECT);
        let datanode = first.headers()["location"].to_str().unwrap().to_string();
        let second = self
            .client
            .put(&datanode)
            .body(data.to_vec())
            .send()
            .unwrap();
        assert_eq!(second.status(), StatusCode::CREATED, "PUT to {datanode}");
    }

    fn open(&self, path: &str) -> Vec<u8> {
        let first = self.client.get(self.url(path, "OPEN")).send().unwrap();
        assert_eq!(
            first.status(),
            StatusCode::TEMPORARY_REDIRECT,
            "OPEN {path}"
        );
        let datanode = first.headers()["location"].to_str().unwrap().to_string();
        let second = self.client.get(&datanode).send().unwrap();
        assert_eq!(second.status(), StatusCode::OK);
        second.bytes().unwrap().to_vec()
    }
}

/// Bytes that differ at every offset, so a misplaced block shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed)
        .collect()
}

/// A directory unique to this run, so tests also pass against a reused cluster.
fn unique_dir(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("/{prefix}-{}-{nanos}", std::process::id())
}

#[test]
fn file_written_and_read_back_through_webhdfs() {
    let fs = WebHdfs::new();
    let dir = unique_dir("rw");
    let file = format!("{dir}/blob.bin");
    let data = pattern(3 << 20, 7);
    assert_eq!(fs.put_op(&dir, "MKDIRS").0, StatusCode::OK);
    fs.create(&file, &data);

    assert_eq!(fs.open(&file), data);
    let status = fs.get_op(&file, "GETFILESTATUS");
    assert_eq!(status["FileStatus"]["length"], data.len());
    assert_eq!(status["FileStatus"]["replication"], 3);

    // The block is held by all three DataNodes, not just acknowledged.
    let locations = fs.get_op(&file, "GETFILEBLOCKLOCATIONS&offset=0&length=1");
    let hosts = &locations["BlockLocations"]["BlockLocation"][0]["names"];
    assert_eq!(hosts.as_array().map(Vec::len), Some(3), "{locations}");

    let missing = fs
        .client
        .get(fs.url(&format!("{dir}/absent"), "OPEN"))
        .send()
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[test]
fn snapshot_created_listed_and_read() {
    let fs = WebHdfs::new();
    let snap = unique_dir("snap");
    let (data_dir, file) = (format!("{snap}/data"), format!("{snap}/data/f.bin"));
    let before = pattern(64 << 10, 1);
    let after = pattern(80 << 10, 2);
    assert_eq!(fs.put_op(&data_dir, "MKDIRS").0, StatusCode::OK);
    fs.create(&file, &before);

    // Not snapshottable yet: HDFS refuses, and says why.
    let (status, refused) = fs.put_op(&snap, "CREATESNAPSHOT&snapshotname=early");
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["RemoteException"]["exception"], "SnapshotException");

    assert_eq!(fs.put_op(&snap, "ALLOWSNAPSHOT").0, StatusCode::OK);
    let (status, created) = fs.put_op(&snap, "CREATESNAPSHOT&snapshotname=s1");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(created["Path"], format!("{snap}/.snapshot/s1"));
    fs.create(&file, &after);

    let list = fs.get_op(&snap, "GETSNAPSHOTLIST");
    let names: Vec<&str> = list["SnapshotList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["dirStatus"]["pathSuffix"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["s1"]);
    let dirs = fs.get_op("/", "GETSNAPSHOTTABLEDIRECTORYLIST");
    let listed = dirs["SnapshottableDirectoryList"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["parentFullPath"] == "/" && d["dirStatus"]["pathSuffix"] == snap[1..])
        .unwrap_or_else(|| panic!("{snap} not snapshottable: {dirs}"));
    assert_eq!(listed["snapshotNumber"], 1);

    assert_eq!(fs.open(&format!("{snap}/.snapshot/s1/data/f.bin")), before);
    assert_eq!(fs.open(&file), after);
    assert_eq!(
        fs.put_op(&snap, "CREATESNAPSHOT&snapshotname=s2").0,
        StatusCode::OK
    );
    let diff = fs.get_op(&snap, "GETSNAPSHOTDIFF&oldsnapshotname=s1&snapshotname=s2");
    // Overwriting replaces the file: HDFS reports a delete and a create.
    let mut entries: Vec<String> = diff["SnapshotDiffReport"]["diffList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["sourcePath"].as_str().unwrap()
            )
        })
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["CREATE data/f.bin", "DELETE data/f.bin", "MODIFY data"],
        "{diff}"
    );
}
