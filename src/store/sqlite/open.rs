//! Opening a SQLite store. Only `table create`, imports and `up` create one
//! ([`OpenMode::Create`]); every other command opens an existing file ([`OpenMode::Existing`])
//! and fails with "no store at PATH" when there is none, so a mistyped path never becomes a new
//! empty database (nor its directory). A file this process cannot write is opened read-only:
//! reads work, and a write fails with an error naming the path. `up` marks the stores it
//! creates (a row in the `anamo_meta` table) so that `up --fresh` deletes only those unless
//! told otherwise.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, MAIN_DB};

use super::{map_err, SqliteStore, SCHEMA};
use crate::store::{OpenMode, RequestCounter, Result, StoreError};

/// The `anamo_meta` row that says `up` created the store.
const MARKER_KEY: &str = "created_by";
const MARKER_VALUE: &str = "anamo up";

impl SqliteStore {
    /// Opens the database file and its schema, creating both (and the file's directory) if
    /// missing.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_mode(path, OpenMode::Create)
    }

    /// Opens an existing store: [`StoreError::NoStore`] when the file or its task table is
    /// missing; read-only when the file cannot be written.
    pub fn open_existing(path: &Path) -> Result<Self> {
        Self::open_mode(path, OpenMode::Existing)
    }

    /// Opens the store at `path` in `mode` (see [`OpenMode`]).
    pub fn open_mode(path: &Path, mode: OpenMode) -> Result<Self> {
        let exists = file_exists(path, mode)?;
        if !exists {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::unavailable(
                        "open",
                        format!("cannot create directory {}: {e}", dir.display()),
                    )
                })?;
            }
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if mode == OpenMode::Create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let fail = |e: rusqlite::Error| name_path(map_err("open", e), path);
        // SQLite falls back to read-only when the file cannot be opened for writing.
        let mut conn = Connection::open_with_flags(path, flags).map_err(fail)?;
        // Workers in other processes share the file: wait for locks instead of failing.
        conn.busy_timeout(Duration::from_secs(30)).map_err(fail)?;
        let read_only = conn.is_readonly(MAIN_DB).map_err(fail)?;
        let mut has_tasks = has_table(&conn, "tasks");
        if read_only && has_tasks.as_ref().is_err_and(cannot_read_wal) {
            // A WAL store in a directory this process cannot write either: its shared-memory
            // file cannot be made, so read the file as it is (nothing can write it anyway).
            conn = open_immutable(path).map_err(fail)?;
            has_tasks = has_table(&conn, "tasks");
        }
        if mode == OpenMode::Existing && !has_tasks.map_err(fail)? {
            return Err(StoreError::NoStore(format!(
                "{} (the file has no task table)",
                path.display()
            )));
        }
        if !read_only {
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(fail)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(fail)?;
            // Idempotent: adds the tables an older store lacks.
            conn.execute_batch(SCHEMA)
                .map_err(|e| name_path(map_err("create schema", e), path))?;
        }
        add_columns(&conn, read_only).map_err(fail)?;
        if read_only {
            add_temp_tables(&conn).map_err(fail)?;
        }
        Ok(SqliteStore {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
            requests: Arc::new(RequestCounter::default()),
        })
    }
}

/// Whether the store file exists; in [`OpenMode::Existing`] a missing one is an error.
fn file_exists(path: &Path, mode: OpenMode) -> Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(StoreError::backend(
            "open",
            format!(
                "{} is a directory; give the path of a SQLite file, e.g. sqlite://{}/anamo.db",
                path.display(),
                path.display()
            ),
        )),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match mode {
            OpenMode::Create => Ok(false),
            OpenMode::Existing => Err(StoreError::NoStore(path.display().to_string())),
        },
        Err(e) => Err(StoreError::unavailable(
            "open",
            format!("{}: {e}", path.display()),
        )),
    }
}

/// Columns later versions added to `tasks`, with their types.
const ADDED_COLUMNS: [(&str, &str); 2] = [("retry_at", "INTEGER"), ("held_from", "TEXT")];

/// Upgrades a store made by an older version: adds the columns it lacks (their NULL means
/// what the older version meant). A store that cannot be written is read through a
/// temporary view that supplies them, so reading commands keep working.
fn add_columns(conn: &Connection, read_only: bool) -> rusqlite::Result<()> {
    if !has_table(conn, "tasks")? {
        return Ok(());
    }
    let present: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('tasks')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let missing: Vec<_> = ADDED_COLUMNS
        .iter()
        .filter(|(name, _)| !present.iter().any(|p| p == name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if read_only {
        let extra: Vec<String> = missing
            .iter()
            .map(|(name, _)| format!("NULL AS {name}"))
            .collect();
        return conn.execute_batch(&format!(
            "CREATE TEMP VIEW tasks AS SELECT *, {} FROM main.tasks",
            extra.join(", ")
        ));
    }
    for (name, ty) in missing {
        conn.execute_batch(&format!("ALTER TABLE tasks ADD COLUMN {name} {ty}"))?;
    }
    Ok(())
}

/// A store made by an older version that this process cannot write lacks the tables added
/// since (`worker_drains`, the controller's drain marks): an empty temporary one stands in
/// for it, so reading commands keep working (nothing is marked in such a store).
fn add_temp_tables(conn: &Connection) -> rusqlite::Result<()> {
    if !has_table(conn, "tasks")? || has_table(conn, "worker_drains")? {
        return Ok(());
    }
    conn.execute_batch(
        "CREATE TEMP TABLE worker_drains (worker_id TEXT PRIMARY KEY, step TEXT NOT NULL)",
    )
}

fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
}

/// Whether a read failed only because the WAL's shared-memory file cannot be created.
fn cannot_read_wal(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
    )
}

/// Opens `path` read-only as an immutable file (no locks, no shared memory).
fn open_immutable(path: &Path) -> rusqlite::Result<Connection> {
    let mut uri = String::from("file:");
    for c in path.display().to_string().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Names the file in an error from the backend (the message alone does not say which file).
pub(super) fn name_path(e: StoreError, path: &Path) -> StoreError {
    match e {
        StoreError::Unavailable { operation, message } => StoreError::Unavailable {
            operation,
            message: format!("{}: {message}", path.display()),
        },
        StoreError::Backend { operation, message } => StoreError::Backend {
            operation,
            message: format!("{}: {message}", path.display()),
        },
        other => other,
    }
}

/// Whether `anamo up` created the store at `path`. A missing file, a file that is not a
/// SQLite store or one without the mark all answer `false`: only a marked store may be
/// deleted without being named.
pub fn created_by_up(path: &Path) -> bool {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let Ok(conn) = Connection::open_with_flags(path, flags) else {
        return false;
    };
    if !has_table(&conn, "anamo_meta").unwrap_or(false) {
        return false;
    }
    conn.query_row(
        "SELECT value FROM anamo_meta WHERE key = ?1",
        [MARKER_KEY],
        |r| r.get::<_, String>(0),
    )
    .optional()
    .ok()
    .flatten()
    .is_some_and(|v| v == MARKER_VALUE)
}

/// Marks the store at `path` as created by `anamo up` (called by `up` right after creating
/// it).
pub fn mark_created_by_up(path: &Path) -> Result<()> {
    let fail = |e: rusqlite::Error| name_path(map_err("mark store", e), path);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(fail)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS anamo_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    )
    .map_err(fail)?;
    conn.execute(
        "INSERT OR REPLACE INTO anamo_meta (key, value) VALUES (?1, ?2)",
        [MARKER_KEY, MARKER_VALUE],
    )
    .map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_mode_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("x.db");
        let err = SqliteStore::open_existing(&missing).unwrap_err();
        assert!(matches!(err, StoreError::NoStore(_)), "{err:?}");
        assert!(err.to_string().contains(&missing.display().to_string()));
        assert!(!missing.parent().unwrap().exists(), "no directory created");

        let path = dir.path().join("t.db");
        SqliteStore::open(&path).unwrap();
        SqliteStore::open_existing(&path).unwrap();
        assert!(!created_by_up(&path));
        mark_created_by_up(&path).unwrap();
        assert!(created_by_up(&path));

        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        let err = SqliteStore::open_existing(&empty).unwrap_err().to_string();
        assert!(err.contains("no task table"), "{err}");
        assert!(!created_by_up(&dir.path().join("missing.db")));
    }

    #[test]
    fn an_older_store_read_only_gets_an_empty_drain_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        SqliteStore::open(&path).unwrap();
        let rw = Connection::open(&path).unwrap();
        rw.execute_batch("DROP TRIGGER worker_drains_removed; DROP TABLE worker_drains")
            .unwrap();
        drop(rw);
        let ro = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let join = "SELECT count(*) FROM workers w LEFT JOIN worker_drains d \
                    ON d.worker_id = w.worker_id";
        let count = |c: &Connection| c.query_row(join, [], |r| r.get::<_, i64>(0));
        assert!(count(&ro).is_err(), "the older store has no drain table");
        add_temp_tables(&ro).unwrap();
        assert_eq!(count(&ro).unwrap(), 0);
        assert!(!has_table(&ro, "worker_drains").unwrap(), "nothing written");
    }
}
