//! `anamo table create|delete|recount|migrate`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;

use super::output::outln;
use crate::store::dynamo::{layout, DynamoStore};
use crate::store::{SharedStore, StoreUrl};

#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Create the table (and its index) if missing, and wait until it is usable. Idempotent.
    Create {
        /// DynamoDB only: the index shards of each step's tasks (1 to 256), recorded in the
        /// table's layout version item when the table is created (default 8; see
        /// docs/dynamodb-table.md). Each step keeps the count it was first written with.
        #[arg(long)]
        shards: Option<u32>,
    },
    /// Delete the table and every task in it.
    Delete {
        /// Required: deleting cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// DynamoDB only: count each step's tasks from the index and overwrite its progress
    /// counters (repairs counts that drifted after a crash or another client's writes).
    Recount {
        /// Only this step (default: every step).
        #[arg(long)]
        step: Option<String>,
    },
    /// DynamoDB only: upgrade a table of layout version 1 to version 2, online (workers and a
    /// controller may run; layout-1 workers must stop or drain before it can finish).
    /// Resumable: run it again after an interruption.
    Migrate {
        /// Required outside a terminal (from a terminal, migrate asks).
        #[arg(long)]
        yes: bool,
        /// Say what would be done (one read-only pass over the table) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(cmd: TableCommand, url: &str) -> anyhow::Result<ExitCode> {
    let parsed: StoreUrl = url.parse()?;
    match cmd {
        TableCommand::Create { shards } => {
            let store: SharedStore = match (&parsed, shards) {
                (StoreUrl::Dynamo { table }, Some(n)) => {
                    let n =
                        layout::check_shards(n).map_err(|e| anyhow::anyhow!("--shards: {e}"))?;
                    Arc::new(DynamoStore::from_env(table).await.with_shards(n))
                }
                (_, Some(_)) => anyhow::bail!(
                    "--shards applies to DynamoDB tables (dynamodb://TABLE) only, not {url}"
                ),
                (_, None) => super::open_store_creating(url).await?,
            };
            store.create_schema().await?;
            outln!("table ready: {}", store.describe());
        }
        TableCommand::Delete { yes } => {
            let store = super::open_store(url).await?;
            if !yes {
                anyhow::bail!(
                    "refusing to delete {} without --yes (this deletes every task in it)",
                    store.describe()
                );
            }
            store.delete_schema().await?;
            outln!("deleted: {}", store.describe());
        }
        TableCommand::Recount { step } => recount(&parsed, url, step).await?,
        TableCommand::Migrate { yes, dry_run } => {
            return super::table_migrate::run(&parsed, yes, dry_run).await
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn recount(parsed: &StoreUrl, url: &str, step: Option<String>) -> anyhow::Result<()> {
    let StoreUrl::Dynamo { table } = parsed else {
        // Opened only to report a missing store as such.
        super::open_store(url).await?;
        outln!("{url}: SQLite counts are exact; nothing to recount");
        return Ok(());
    };
    let store = DynamoStore::from_env(table).await;
    store.check_layout().await?;
    let steps = match step {
        Some(s) => vec![s],
        None => crate::store::TaskStore::steps(&store).await?,
    };
    for step in steps {
        let c = store.recount(&step).await?;
        outln!(
            "{step}: waiting {} pending {} running {} succeeded {} failed {} cancelled {} held {} retrying {}",
            c.waiting, c.pending, c.running, c.succeeded, c.failed, c.cancelled, c.held, c.retrying
        );
    }
    Ok(())
}
