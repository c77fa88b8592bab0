//! `anamo table create|delete`.

use std::process::ExitCode;

use clap::Subcommand;

use super::output::outln;
use crate::store::{OpenMode, SharedStore};

#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Create the table (and its index) if missing, and wait until it is usable. Idempotent.
    Create,
    /// Delete the table and every task in it.
    Delete {
        /// Required: deleting cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

impl TableCommand {
    /// How the command opens its store: only `create` may create one.
    pub fn opening(&self) -> OpenMode {
        match self {
            TableCommand::Create => OpenMode::Create,
            TableCommand::Delete { .. } => OpenMode::Existing,
        }
    }
}

pub async fn run(cmd: TableCommand, store: SharedStore) -> anyhow::Result<ExitCode> {
    match cmd {
        TableCommand::Create => {
            store.create_schema().await?;
            outln!("table ready: {}", store.describe());
        }
        TableCommand::Delete { yes } => {
            if !yes {
                anyhow::bail!(
                    "refusing to delete {} without --yes (this deletes every task in it)",
                    store.describe()
                );
            }
            store.delete_schema().await?;
            outln!("deleted: {}", store.describe());
        }
    }
    Ok(ExitCode::SUCCESS)
}
