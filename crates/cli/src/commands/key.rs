use std::path::PathBuf;

use anyhow::Result;
use tidemark_repo::keyfile::KdfParams;

use crate::ctx::{print_json, read_password, Global};

#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a passphrase (from TIDEMARK_NEW_PASSWORD or --new-password-file)
    Add {
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        #[arg(long, hide = true, env = "TIDEMARK_INSECURE_TEST_KDF", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
        insecure_test_kdf: bool,
    },
    /// List key files
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a key file by id (not the last one, nor the one in use)
    Remove { id: String },
}

pub fn run(g: &Global, c: KeyCommand) -> Result<i32> {
    let repo = g.open()?;
    match c {
        KeyCommand::Add { new_password_file, insecure_test_kdf } => {
            let pw = read_password(new_password_file.as_ref(), "TIDEMARK_NEW_PASSWORD")?;
            let kdf = if insecure_test_kdf { KdfParams::insecure_fast() } else { KdfParams::default() };
            let id = repo.add_key(pw.as_bytes(), kdf)?;
            println!("added key {id}");
        }
        KeyCommand::List { json } => {
            let keys = repo.list_keys()?;
            if json {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|(id, k)| serde_json::json!({"id": id, "current": *id == repo.key_id(), "created": k.created, "hostname": k.hostname, "username": k.username, "kdf": k.kdf, "params": k.params}))
                    .collect();
                print_json(&rows)?;
            } else {
                for (id, k) in keys {
                    let cur = if id == repo.key_id() { "*" } else { " " };
                    println!("{cur} {} {} {}@{}", id.short(), k.created.format("%Y-%m-%d %H:%M:%S"), k.username, k.hostname);
                }
            }
        }
        KeyCommand::Remove { id } => {
            let removed = repo.remove_key(&id)?;
            println!("removed key {removed}");
        }
    }
    Ok(0)
}
