//! Just enough of the MongoDB wire protocol (OP_MSG) to ask a server for
//! readiness and to create the capped oplog, without a driver and its runtime
//! in the testbed library.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bson::{doc, Document};

const OP_MSG: i32 = 2013;
/// Replies larger than this are not something a readiness check asks for.
const MAX_REPLY: usize = 16 << 20;

/// Runs one command against database `db` and returns the reply; a reply with
/// `ok: 0` is an error carrying the server's message.
pub fn command(addr: SocketAddr, db: &str, mut cmd: Document) -> Result<Document> {
    static REQUEST_ID: AtomicI32 = AtomicI32::new(1);
    cmd.insert("$db", db);
    let body = bson::to_vec(&cmd)?;
    let len = i32::try_from(16 + 4 + 1 + body.len()).context("command too large")?;
    let mut msg = Vec::with_capacity(len as usize);
    msg.extend_from_slice(&len.to_le_bytes());
    msg.extend_from_slice(&REQUEST_ID.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    msg.extend_from_slice(&0i32.to_le_bytes());
    msg.extend_from_slice(&OP_MSG.to_le_bytes());
    msg.extend_from_slice(&0u32.to_le_bytes());
    msg.push(0); // section kind 0: the command document
    msg.extend_from_slice(&body);

    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&msg)?;

    let mut header = [0u8; 16];
    stream
        .read_exact(&mut header)
        .context("reading reply header")?;
    let reply_len = i32::from_le_bytes(header[0..4].try_into()?) as usize;
    let op = i32::from_le_bytes(header[12..16].try_into()?);
    if op != OP_MSG || !(21..=MAX_REPLY).contains(&reply_len) {
        bail!("unexpected reply: opcode {op}, length {reply_len}");
    }
    let mut rest = vec![0u8; reply_len - 16];
    stream.read_exact(&mut rest).context("reading reply")?;
    if rest[4] != 0 {
        bail!("reply starts with section kind {}, not a body", rest[4]);
    }
    let reply = Document::from_reader(&rest[5..]).context("decoding reply")?;
    let ok = match reply.get("ok") {
        Some(bson::Bson::Double(v)) => *v == 1.0,
        Some(bson::Bson::Int32(v)) => *v == 1,
        Some(bson::Bson::Int64(v)) => *v == 1,
        _ => false,
    };
    if !ok {
        bail!("command failed: {reply}");
    }
    Ok(reply)
}

pub fn ping(addr: SocketAddr) -> Result<()> {
    command(addr, "admin", doc! { "ping": 1 }).map(|_| ())
}
