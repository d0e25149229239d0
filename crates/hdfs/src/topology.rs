//! The cluster as the active NameNode describes it: its version and id,
//! safe mode, the DataNodes (live and dead, with capacity), the storage
//! policies and the configuration it serves; and the checks a backup makes
//! before its cut.
//!
//! HDFS needs no rebalancing freeze for a consistent copy: a snapshot is an
//! atomic, O(1) cut of a directory tree in the NameNode, whatever the
//! balancer or a decommission moves underneath (blocks move, the namespace
//! does not). What must hold is that the NameNode is active and out of safe
//! mode (a snapshot is refused in safe mode).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{HdfsError, Result};
use crate::webhdfs::{DataNode, WebHdfs};

#[derive(Debug, Clone)]
pub struct Topology {
    pub namenode: String,
    pub version: String,
    pub cluster_id: String,
    /// Empty when out of safe mode; else the NameNode's own words.
    pub safe_mode: String,
    pub datanodes: Vec<DataNode>,
    pub storage_policies: BTreeMap<u8, String>,
}

impl Topology {
    pub fn live_datanodes(&self) -> usize {
        self.datanodes.iter().filter(|d| d.live).count()
    }
}

pub async fn discover(hdfs: &WebHdfs) -> Result<Topology> {
    // Any call finds the active NameNode (or says why none answers).
    hdfs.status("/").await?;
    let info = hdfs.jmx("Hadoop:service=NameNode,name=NameNodeInfo").await?;
    let s = |k: &str| info.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let datanodes = hdfs.datanodes().await?;
    let storage_policies = policies(hdfs).await.unwrap_or_default();
    Ok(Topology {
        namenode: hdfs.active_namenode().to_string(),
        version: s("Version"),
        cluster_id: s("ClusterId"),
        safe_mode: s("Safemode"),
        datanodes,
        storage_policies,
    })
}

async fn policies(hdfs: &WebHdfs) -> Result<BTreeMap<u8, String>> {
    let v = hdfs.all_storage_policies().await?;
    Ok(v.into_iter().collect())
}

/// Why the cluster cannot be cut now, if it cannot.
pub fn refuse(t: &Topology) -> Result<()> {
    if !t.safe_mode.is_empty() {
        return Err(HdfsError::NotReady(format!(
            "NameNode {} is in safe mode ({}); snapshots cannot be taken until it leaves it \
             (it does by itself once enough blocks are reported, or: hdfs dfsadmin -safemode leave)",
            t.namenode,
            t.safe_mode.trim()
        )));
    }
    if t.live_datanodes() == 0 {
        return Err(HdfsError::NotReady(format!("NameNode {} reports no live DataNode", t.namenode)));
    }
    Ok(())
}
