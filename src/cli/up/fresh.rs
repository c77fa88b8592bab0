//! `anamo up --fresh`: which SQLite store may be deleted before a run (one an earlier `up`
//! created, or any with `--yes`; never a DynamoDB table), and deleting it with its
//! `-wal`/`-shm` files.

use std::path::PathBuf;

/// What `up --fresh` does with the store it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fresh {
    /// There is nothing to delete.
    Nothing,
    Delete,
    /// Not deleted, and why.
    Refuse(String),
}

/// Decides what `--fresh` may delete: a SQLite store an earlier `up` created, or any SQLite
/// store with `--yes`; never a DynamoDB table.
fn fresh_decision(url: &str, exists: bool, made_by_up: bool, yes: bool) -> Fresh {
    if !url.starts_with("sqlite://") {
        return Fresh::Refuse(format!(
            "--fresh deletes only SQLite stores and {url} is not one; nothing was deleted \
             (delete a table with `anamo table delete --yes`, or drop --fresh)"
        ));
    }
    match (exists, made_by_up || yes) {
        (false, _) => Fresh::Nothing,
        (true, true) => Fresh::Delete,
        (true, false) => Fresh::Refuse(format!(
            "--fresh would delete {url}, a store that `anamo up` did not create (named by \
             --store or ANAMO_STORE); nothing was deleted. Add --yes to delete it and every task \
             in it, drop --fresh to run on its tasks, or give another store, e.g. \
             --store sqlite://up.db"
        )),
    }
}

/// `--fresh`: deletes the SQLite store (and its `-wal`/`-shm` files) when allowed, saying
/// which files it deleted; refuses otherwise.
pub(super) fn start_fresh(url: &str, yes: bool) -> anyhow::Result<()> {
    let path = url.strip_prefix("sqlite://").map(PathBuf::from);
    let exists = path.as_ref().is_some_and(|p| p.exists());
    let made_by_up = path
        .as_ref()
        .is_some_and(|p| crate::store::sqlite::created_by_up(p));
    match (fresh_decision(url, exists, made_by_up, yes), path) {
        (Fresh::Refuse(why), _) => anyhow::bail!(why),
        (Fresh::Delete, Some(path)) => {
            let mut deleted = Vec::new();
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let file = PathBuf::from(file);
                match std::fs::remove_file(&file) {
                    Ok(()) => deleted.push(file.display().to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => anyhow::bail!("--fresh: cannot delete {}: {e}", file.display()),
                }
            }
            let whose = if made_by_up {
                "created by an earlier `anamo up`"
            } else {
                "deleted as --yes says"
            };
            eprintln!("--fresh: deleted {} ({whose})", deleted.join(", "));
            Ok(())
        }
        (Fresh::Nothing | Fresh::Delete, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_deletes_only_what_up_made_or_what_yes_names() {
        let url = "sqlite://tasks.db";
        assert_eq!(fresh_decision(url, false, false, false), Fresh::Nothing);
        assert_eq!(fresh_decision(url, true, true, false), Fresh::Delete);
        assert_eq!(fresh_decision(url, true, false, true), Fresh::Delete);
        let Fresh::Refuse(why) = fresh_decision(url, true, false, false) else {
            panic!("a store up did not make is deleted without --yes");
        };
        assert!(
            why.contains("sqlite://tasks.db") && why.contains("--yes"),
            "{why}"
        );
        let dynamo = fresh_decision("dynamodb://t", true, false, true);
        assert!(matches!(dynamo, Fresh::Refuse(_)), "{dynamo:?}");
    }
}
