//! A cluster directory emptied before a start.
//!
//! Leftovers of an earlier cluster of the same name break a fresh one: HDFS
//! DataNodes keep the old namespace id, etcd members the old membership,
//! Redis nodes their old `nodes.conf`. [`Root::create_cluster`] has already
//! refused if that earlier cluster still runs, so nothing live is removed.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::root::Root;

pub fn cluster_dir(root: &Root, name: &str) -> Result<PathBuf> {
    let dir = root.cluster_dir(name);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
