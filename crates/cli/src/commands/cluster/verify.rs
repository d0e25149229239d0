use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::ctx::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster's TOML file
    #[arg(long)]
    pub config: PathBuf,
}

pub fn run(_g: &Global, _a: Args) -> Result<i32> {
    bail!("in progress")
}
