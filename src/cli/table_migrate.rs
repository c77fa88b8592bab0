//! `anamo table migrate`: the command's prompt, progress lines and dry-run summary around
//! [`DynamoStore::migrate`].

use std::process::ExitCode;

use super::output::{out, outln};
use crate::clock::SystemClock;
use crate::store::dynamo::{DynamoStore, MigrateEvent, MigratePreview, SCHEMA_VERSION};
use crate::store::StoreUrl;

/// `anamo table migrate` on the store `url`: a DynamoDB table is opened without the layout
/// check that refuses a version-1 table to every other command.
pub async fn run(url: &StoreUrl, yes: bool, dry_run: bool) -> anyhow::Result<ExitCode> {
    match url {
        StoreUrl::Dynamo { table } => migrate(table, yes, dry_run).await,
        StoreUrl::Sqlite(path) => Err(no_layout(&path.display().to_string())),
    }
}

/// Why `table migrate` does not apply to a SQLite store.
fn no_layout(store: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "`table migrate` upgrades the layout of a DynamoDB table; the SQLite store {store} needs \
         no migration"
    )
}

async fn migrate(table: &str, yes: bool, dry_run: bool) -> anyhow::Result<ExitCode> {
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
