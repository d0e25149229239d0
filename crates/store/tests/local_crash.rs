//! A writer killed with SIGKILL in the middle of `put` leaves, under every
//! key, a whole object or none: the test binary re-runs itself as a writer
//! child, kills it at a random moment and checks every object byte by byte.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidemark_store::local::{LocalStore, TEMP_PREFIX};
use tidemark_store::Store;

const CHILD_ENV: &str = "TIDEMARK_CRASH_WRITER_DIR";
const SIZE: usize = 8 << 20;

fn object(i: u32) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; SIZE])
}

/// The writer; does nothing unless started by the test below.
#[tokio::test]
async fn crash_writer_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = LocalStore::new(dir);
    for i in 0.. {
        store.put(&format!("obj/{i:06}"), object(i)).await.unwrap();
    }
}

/// (objects, temporaries) in a directory.
fn count(dir: &Path) -> (usize, usize) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let temps = names.iter().filter(|n| n.starts_with(TEMP_PREFIX)).count();
    (names.len() - temps, temps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_put_leaves_whole_objects_only() {
    let mut rounds_with_partial_write = 0;
    for round in 0..5u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_writer_child", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let objects = dir.path().join("obj");
        let deadline = Instant::now() + Duration::from_secs(60);
        while count(&objects).0 < 3 {
            assert!(Instant::now() < deadline, "writer made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        // A different moment in the write cycle each round.
        std::thread::sleep(Duration::from_millis(3 + round * 7));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        if count(&objects).1 > 0 {
            rounds_with_partial_write += 1;
        }
        let store = LocalStore::new(dir.path());
        let listed = store.list("obj/").await.unwrap();
        assert!(listed.len() >= 3);
        for meta in &listed {
            assert!(
                !meta.key.contains(TEMP_PREFIX),
                "temporary listed: {}",
                meta.key
            );
            let i: u32 = meta.key["obj/".len()..].parse().unwrap();
            assert_eq!(meta.size, SIZE as u64, "{} is partial", meta.key);
            assert!(
                store.get(&meta.key).await.unwrap() == object(i),
                "{} corrupt",
                meta.key
            );
        }
        store
            .remove_stale_temporaries(Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(count(&objects).1, 0);
    }
    // The kill must have hit a write in progress at least once, or this test
    // proved nothing about atomicity.
    assert!(
        rounds_with_partial_write > 0,
        "no round caught a put mid-way"
    );
}
