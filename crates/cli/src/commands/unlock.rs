use anyhow::Result;

use crate::ctx::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove every lock, not only stale ones (only when no tidemark runs)
    #[arg(long)]
    pub remove_all: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let n = tidemark_repo::lock::remove_locks(&repo, a.remove_all)?;
    println!("removed {n} locks");
    Ok(0)
}
