//! Hadoop's client tools through the `testbed` binary: a real DistCp (local
//! MapReduce mode) of a snapshot from one testbed HDFS to a second,
//! independent one, then an incremental `-update -diff s1 s2` that carries
//! an addition, a deletion, an overwrite and a rename over.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{ensure, Context, Result};
use testbed::fixture::{self, Shared};
use testbed::{hdfs, Kind, UpOptions};

/// One DataNode each: DistCp needs two clusters, not big ones.
fn cluster(name: &str) -> Result<Shared> {
    let opts = UpOptions {
        name: Some(name.into()),
        nodes: Some(1),
        ..UpOptions::default()
    };
    // An environment variable nobody sets: always clusters of this test's own.
    fixture::start_or_reuse(Kind::Hdfs, "TESTBED_HDFS_TOOLS_ROOT", &opts)
}

fn testbed(c: &Shared, tool: &str, args: &[&str]) -> Result<Vec<u8>> {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .arg("--root")
        .arg(c.root.dir())
        .args([tool, "--name", &c.name])
        .args(args)
        .output()
        .context("running testbed")?;
    ensure!(
        out.status.success(),
        "testbed {tool} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

fn fs_bytes(c: &Shared, args: &[&str]) -> Result<Vec<u8>> {
    testbed(c, "hdfs-cli", &[&["--"], args].concat())
}

fn fs(c: &Shared, args: &[&str]) -> Result<String> {
    Ok(String::from_utf8(fs_bytes(c, args)?)?)
}

fn dfsadmin(c: &Shared, args: &[&str]) -> Result<String> {
    let out = testbed(
        c,
        "hdfs-cli",
        &[&["--class", "dfsadmin", "--"], args].concat(),
    )?;
    Ok(String::from_utf8(out)?)
}

fn distcp(c: &Shared, args: &[&str]) -> Result<String> {
    let out = testbed(c, "distcp", &[&["--"], args].concat())?;
    Ok(String::from_utf8(out)?)
}

/// Paths and sizes of the files under `dir`, from `-ls -R` (relative, sorted).
fn files(c: &Shared, dir: &str) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for line in fs(c, &["-ls", "-R", dir])?.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 8 || cols[0].starts_with('d') {
            continue;
        }
        let path = cols[7].strip_prefix(dir).context("listed under dir")?;
        out.push((path.to_string(), cols[4].parse()?));
    }
    out.sort();
    Ok(out)
}

fn local_file(dir: &Path, name: &str, len: usize, seed: u8) -> Result<String> {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed)
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, data)?;
    Ok(path.display().to_string())
}

#[test]
fn distcp_copies_a_snapshot_then_its_diff_to_a_second_cluster() -> Result<()> {
    let (src, dst) = (cluster("distcp-src")?, cluster("distcp-dst")?);
    let (src_info, dst_info): (hdfs::Info, hdfs::Info) = (src.info(), dst.info());
    assert_ne!(src_info.namenode, dst_info.namenode);
    let tmp = tempfile::tempdir()?;
    let a = local_file(tmp.path(), "a.bin", 300_000, 1)?;
    let b = local_file(tmp.path(), "b.bin", 70_000, 2)?;
    let c = local_file(tmp.path(), "c.bin", 5_000, 3)?;
    let a2 = local_file(tmp.path(), "a2.bin", 123_456, 4)?;

    fs(&src, &["-mkdir", "-p", "/data/p1", "/data/p2"])?;
    fs(&src, &["-put", &a, &b, "/data/p1/"])?;
    fs(&src, &["-put", &c, "/data/p2/"])?;
    dfsadmin(&src, &["-allowSnapshot", "/data"])?;
    fs(&src, &["-createSnapshot", "/data", "s1"])?;
    // The copy target: snapshottable, so that it can carry s1 as the diff's base.
    fs(&dst, &["-mkdir", "-p", "/copy"])?;
    dfsadmin(&dst, &["-allowSnapshot", "/copy"])?;

    let target = format!("{}/copy", dst_info.namenode);
    distcp(&src, &["-update", "/data/.snapshot/s1", &target])?;
    let expected = vec![
        ("/p1/a.bin".to_string(), 300_000),
        ("/p1/b.bin".to_string(), 70_000),
        ("/p2/c.bin".to_string(), 5_000),
    ];
    assert_eq!(files(&dst, "/copy")?, expected);
    // The bytes themselves, not just the sizes.
    let copied = fs_bytes(&dst, &["-cat", "/copy/p1/b.bin"])?;
    assert_eq!(copied, std::fs::read(&b)?);
    fs(&dst, &["-createSnapshot", "/copy", "s1"])?;

    // s2: one file overwritten, one added, one deleted, a directory renamed.
    fs(&src, &["-put", "-f", &a2, "/data/p1/a.bin"])?;
    fs(&src, &["-put", &a2, "/data/p2/new.bin"])?;
    fs(&src, &["-rm", "-skipTrash", "/data/p1/b.bin"])?;
    fs(&src, &["-mv", "/data/p2", "/data/p3"])?;
    fs(&src, &["-createSnapshot", "/data", "s2"])?;
    distcp(&src, &["-update", "-diff", "s1", "s2", "/data", &target])?;
    let expected = vec![
        ("/p1/a.bin".to_string(), 123_456),
        ("/p3/c.bin".to_string(), 5_000),
        ("/p3/new.bin".to_string(), 123_456),
    ];
    assert_eq!(files(&dst, "/copy")?, expected);
    assert_eq!(files(&src, "/data")?, expected);
    // The copy still has s1 as it was: the diff changed only the live tree.
    assert_eq!(files(&dst, "/copy/.snapshot/s1")?.len(), 3);
    assert_eq!(
        fs(&dst, &["-du", "-s", "-x", "/copy"])?
            .split_whitespace()
            .next(),
        Some("251912")
    );
    Ok(())
}
