//! `anamo table create|delete|migrate`.

use std::process::ExitCode;

use clap::Subcommand;

use super::output::{out, outln};
use crate::clock::SystemClock;
use crate::store::dynamo::{DynamoStore, MigrateEvent, MigratePreview, SCHEMA_VERSION};
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
    /// Upgrade a DynamoDB table of layout version 1 to version 2, online (workers and a
    /// controller may run; layout-1 workers must stop or drain before it can finish). Resumable.
    Migrate {
        /// Required outside a terminal (from a terminal, migrate asks).
        #[arg(long)]
        yes: bool,
        /// Say what would be done (one read-only pass over the table) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

impl TableCommand {
    /// How the command opens its store: only `create` may create one.
    pub fn opening(&self) -> OpenMode {
        match self {
            TableCommand::Create => OpenMode::Create,
            TableCommand::Delete { .. } | TableCommand::Migrate { .. } => OpenMode::Existing,
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
        // A DynamoDB table is migrated through [`migrate`], without the layout check of opening.
        TableCommand::Migrate { .. } => return Err(no_layout(&store.describe())),
    }
    Ok(ExitCode::SUCCESS)
}

/// Why `table migrate` does not apply to a SQLite store.
pub fn no_layout(store: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "`table migrate` upgrades the layout of a DynamoDB table; the SQLite store {store} needs \
         no migration"
    )
}

/// `anamo table migrate` on the DynamoDB table `table`, opened without the layout check that
/// refuses a version-1 table to every other command.
pub async fn migrate(table: &str, yes: bool, dry_run: bool) -> anyhow::Result<ExitCode> {
    let store = DynamoStore::from_env(table).await;
    let mut on = |event: MigrateEvent| print_event(&event);
    if dry_run {
        let p = store.migrate_preview(&mut on).await?;
        outln!("{}", preview_text(table, &p));
        return Ok(ExitCode::SUCCESS);
    }
    if !yes && !confirmed(table)? {
        anyhow::bail!(
            "refusing to migrate dynamodb://{table} without --yes (not run from a terminal); \
             see docs/dynamodb-table.md, \"Upgrading the layout\", then run \
             `anamo --store dynamodb://{table} table migrate --yes`"
        );
    }
    store.migrate(&SystemClock, &mut on).await?;
    Ok(ExitCode::SUCCESS)
}

/// Asks on a terminal; false (without asking) elsewhere.
fn confirmed(table: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    out!("migrate dynamodb://{table} to layout version {SCHEMA_VERSION}? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn print_event(event: &MigrateEvent) {
    match event {
        MigrateEvent::AlreadyCurrent { version } => {
            outln!("already at version {version}: nothing to do")
        }
        MigrateEvent::AddingIndex => outln!("adding index gsi2 (the table stays in use)..."),
        MigrateEvent::IndexActive => outln!("index gsi2 is ACTIVE"),
        MigrateEvent::VersionWritten { shards } => outln!(
            "version item written (layout {SCHEMA_VERSION}, {shards} shards per new step): \
             layout-{SCHEMA_VERSION} binaries may start now"
        ),
        MigrateEvent::Pass(p) => outln!(
            "pass {}: {} items read, {} rewritten",
            p.pass,
            p.items,
            p.rewritten
        ),
        MigrateEvent::Waiting {
            layout1_leases,
            layout1_writes,
        } => outln!(
            "waiting for layout-1 clients: {layout1_leases} tasks held by layout-1 workers, \
             {layout1_writes} items written by layout-1 clients since the last pass \
             (stop or drain layout-1 workers and controllers)"
        ),
        MigrateEvent::Recounted { step } => outln!("step {step}: counts rebuilt"),
        MigrateEvent::DroppingIndex => outln!("dropping index gsi1..."),
        MigrateEvent::Done => outln!("migrated to layout version {SCHEMA_VERSION}"),
    }
}

fn preview_text(table: &str, p: &MigratePreview) -> String {
    if p.version.is_some() && !p.has_old_index {
        return format!("dynamodb://{table} is already at version {SCHEMA_VERSION}: nothing to do");
    }
    let index = if p.has_new_index {
        "index gsi2 exists already"
    } else {
        "would add index gsi2"
    };
    format!(
        "dry run: {index}; would rewrite {} of {} items (index keys; layout-1 leases marked), \
         give {} steps a shard count, write the version item, recount every step and drop \
         index gsi1 (nothing was written)",
        p.stats.rewritten, p.stats.items, p.stats.steps_registered
    )
}
