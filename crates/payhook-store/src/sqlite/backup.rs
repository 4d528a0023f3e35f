//! Backups of a live SQLite database, and checks of a copy. Both only read the source: no
//! migration, no key file, no lease touched.
//!
//! The copy is SQLite's online backup API in a single step: the whole database is copied
//! inside one read transaction, which in WAL mode runs beside the node's writer without
//! blocking it. The copy is the database as of that transaction's start: every write
//! committed before it began, none after. A copy made in small steps would restart whenever
//! the node wrote between two steps, and under steady load never finish.

use super::migrate::MIGRATIONS;
use super::rows::{backend, query_rows};
use crate::columns::{merchant_from, MERCHANT_COLUMNS};
use crate::seal::{self, Sealer};
use crate::StoreError;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;

/// Opens `path` for reading only; fails if there is no database there.
fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Backend(format!("opening {} to read it: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(backend)?;
    Ok(conn)
}

/// A failed copy step, said by its SQLite code: the backup API records the cause on neither
/// connection, so the driver's message is empty ("not an error").
fn copy_failed(e: rusqlite::Error, target: &Path) -> StoreError {
    let target = target.display();
    StoreError::Backend(match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
            format!("writing {target}: the disk is full (SQLITE_FULL)")
        }
        rusqlite::Error::SqliteFailure(f, _) => format!("writing {target}: {f}"),
        other => format!("writing {target}: {other}"),
    })
}

/// Copies the database at `source` (in use by a running node or not) to a new file `target`,
/// consistently; returns the pages copied. `target` must not exist. On failure (a full disk,
/// say) the partial copy is removed; the source is never written.
pub fn backup(source: &Path, target: &Path) -> Result<i32, StoreError> {
    if target.exists() {
        return Err(StoreError::Backend(format!("{} exists already", target.display())));
    }
    let copied = copy(source, target);
    if copied.is_err() {
        let _ = std::fs::remove_file(target);
    }
    copied
}

fn copy(source: &Path, target: &Path) -> Result<i32, StoreError> {
    let src = open_read_only(source)?;
    let mut dst = Connection::open(target)
        .map_err(|e| StoreError::Backend(format!("creating {}: {e}", target.display())))?;
    let pages = {
        let backup = Backup::new(&src, &mut dst).map_err(backend)?;
        match backup.step(-1).map_err(|e| copy_failed(e, target))? {
            StepResult::Done => backup.progress().pagecount,
            other => {
                return Err(StoreError::Backend(format!("the copy did not finish: {other:?}")));
            }
        }
    };
    // On disk before the command says it is done.
    dst.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL;")
        .map_err(backend)?;
    dst.close().map_err(|(_, e)| backend(e))?;
    std::fs::File::open(target)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::Backend(format!("syncing {}: {e}", target.display())))?;
    Ok(pages)
}

/// What [`check`] found in a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// `PRAGMA integrity_check`'s answer: `ok` for a sound file.
    pub integrity: String,
    pub schema_version: i64,
    /// The newest schema this payhook knows.
    pub known_version: i64,
    /// Merchants whose sealed secrets the key opened.
    pub merchants_opened: usize,
}

impl CheckReport {
    pub fn is_sound(&self) -> bool {
        self.integrity == "ok" && self.schema_version <= self.known_version
    }
}

/// Checks the database at `path`, reading only: SQLite's integrity check, the schema
/// version, and that `sealer` holds the master key its secrets were sealed with (the check
/// value, then every merchant's secrets opened). A key that does not open them is an error.
pub fn check(path: &Path, sealer: &Sealer) -> Result<CheckReport, StoreError> {
    let conn = open_read_only(path)?;
    let integrity: String =
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(backend)?;
    let schema_version: i64 = conn
        .query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))
        .map_err(backend)?;
    let stored: Option<String> = conn
        .query_row("SELECT value FROM settings WHERE key = ?1", [seal::CHECK_SETTING], |r| r.get(0))
        .ok();
    seal::check_master_key(sealer, stored.as_deref(), stored.is_none())?;
    let sql = format!("SELECT {MERCHANT_COLUMNS} FROM merchants");
    let merchants = query_rows(&conn, &sql, [], |r| merchant_from(sealer, r))?;
    let known_version = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    Ok(CheckReport { integrity, schema_version, known_version, merchants_opened: merchants.len() })
}
