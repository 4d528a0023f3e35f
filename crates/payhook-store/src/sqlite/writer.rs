//! Group commit for SQLite: one thread owns the write connection and commits every write that
//! arrived while the previous commit was syncing in ONE transaction, so a burst of N status
//! reports costs one fsync instead of N.
//!
//! Jobs run without savepoints (a savepoint copies every page a job touches into a statement
//! journal, which was the largest single cost of a write). That is safe because almost every
//! failing job fails before its first write: those are answered with their error and leave
//! nothing behind. A job that fails *after* writing (detected by SQLite's change counter)
//! poisons the group: the transaction is rolled back and the whole group run again, this time
//! each job in its own savepoint, so the failed job rolls back alone and the others commit.
//! Jobs are therefore `Fn`, run at most twice. Every job's caller is answered only after the
//! COMMIT returned, so "answered Ok" still means "on disk".
//!
//! Under load (the last group held more than one job) the writer lingers up to 200 µs for more
//! jobs before committing a small group; an idle writer commits a lone job at once.
//!
//! A full disk: SQLite answers `SQLITE_FULL` (measured at COMMIT, when the WAL must grow; a
//! statement can meet it too when the page cache spills) and may roll the whole transaction
//! back itself. Every job of the group is then answered [`StoreError::StorageFull`], the rest
//! of the group does not run (it would run in autocommit, each statement its own commit), and
//! the writer remembers that its last write failed so: [`Writer::check_space`].

use super::rows::{backend, disk_full, exec_prepared, Statements};
use crate::StoreError;
use rusqlite::{Connection, PrepFlags, Statement};
use std::cell::RefCell;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Jobs committed together at most (bounds the latency a job can add to its group).
const MAX_GROUP: usize = 512;

/// The write connection's statements, each prepared once and kept for the connection's life,
/// found by the address and length of their `&'static str` SQL. A statement in use is taken
/// out of the table and put back after, so a statement needed again while it is in use is
/// simply prepared a second time. The writer runs a few dozen distinct statements, so the
/// table is a list searched by two integer comparisons per entry, which costs less than
/// hashing the key.
pub(super) struct Prepared<'c> {
    conn: &'c Connection,
    idle: RefCell<Vec<(SqlKey, Statement<'c>)>>,
}

/// The address and length of a statement's `&'static str` SQL.
type SqlKey = (usize, usize);

impl<'c> Prepared<'c> {
    fn new(conn: &'c Connection) -> Self {
        Prepared { conn, idle: RefCell::new(Vec::new()) }
    }

    fn take(&self, key: SqlKey) -> Option<Statement<'c>> {
        let mut idle = self.idle.borrow_mut();
        let i = idle.iter().position(|(k, _)| *k == key)?;
        Some(idle.swap_remove(i).1)
    }
}

impl Statements for Prepared<'_> {
    fn with_sql<T>(
        &self,
        sql: &'static str,
        f: impl FnOnce(&mut Statement<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let key = (sql.as_ptr() as usize, sql.len());
        let mut stmt = match self.take(key) {
            Some(stmt) => stmt,
            // Kept for the connection's life: SQLite then keeps its lookaside memory for
            // running statements, as it does for rusqlite's cached ones.
            None => self.conn.prepare_with_flags(sql, PrepFlags::SQLITE_PREPARE_PERSISTENT)?,
        };
        // rusqlite resets a statement when its execution or its rows end, so what goes back
        // is ready for the next use.
        let result = f(&mut stmt);
        self.idle.borrow_mut().push((key, stmt));
        result
    }

    fn connection(&self) -> &Connection {
        self.conn
    }
}

/// The write connection as a job sees it: the open transaction, and whether this run is the
/// careful one (each job in a savepoint), which jobs with several all-or-nothing parts of
/// their own (batch reports) need to know.
pub(super) struct Tx<'t, 'c> {
    prepared: &'t Prepared<'c>,
    careful: bool,
}

impl Deref for Tx<'_, '_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.prepared.conn
    }
}

impl Statements for Tx<'_, '_> {
    fn with_sql<T>(
        &self,
        sql: &'static str,
        f: impl FnOnce(&mut Statement<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepared.with_sql(sql, f)
    }

    fn connection(&self) -> &Connection {
        self.prepared.conn
    }

    fn defers_merged_writes(&self) -> bool {
        !self.careful
    }
}

impl Tx<'_, '_> {
    /// True when the job runs inside its own savepoint (the re-run of a poisoned group).
    pub(super) fn careful(&self) -> bool {
        self.careful
    }

    /// Rolls back to a savepoint (`sql` is its `ROLLBACK TO …`), and with it what the writer
    /// thread cached, since a job may have cached what the rollback takes away.
    pub(super) fn roll_back_to(&self, sql: &'static str) -> rusqlite::Result<usize> {
        super::forget_writer_caches();
        exec_prepared(self, sql, [])
    }

    /// Rows changed so far in this connection: a part that failed without changing any can
    /// be answered with its error and nothing undone.
    pub(super) fn changes(&self) -> u64 {
        self.prepared.conn.total_changes()
    }
}

/// What a job's fast run reports to the group.
enum Ran {
    /// Succeeded, or failed without writing anything.
    Clean,
    /// Failed after writing: the group must be rolled back and run carefully.
    Poisoned,
}

/// Why a group's transaction failed: every job of the group is answered with it.
#[derive(Clone, Debug)]
struct Failed {
    /// For want of disk space: answered [`StoreError::StorageFull`].
    full: bool,
    message: String,
}

impl Failed {
    fn sqlite(e: rusqlite::Error) -> Self {
        Failed { full: disk_full(&e), message: e.to_string() }
    }

    fn store(e: &StoreError) -> Self {
        Failed { full: matches!(e, StoreError::StorageFull(_)), message: e.to_string() }
    }

    fn error(self) -> StoreError {
        if self.full {
            StoreError::StorageFull(format!("commit failed: {}", self.message))
        } else {
            StoreError::Backend(format!("commit failed: {}", self.message))
        }
    }
}

/// A unit of work for the writer thread.
trait Job: Send {
    fn run(&mut self, tx: &Tx<'_, '_>) -> Ran;
    /// Its last run's error, if it failed.
    fn failure(&self) -> Option<Failed>;
    /// Answers the caller once the group's commit is known.
    fn finish(self: Box<Self>, commit: Result<(), Failed>);
}

struct Typed<T, F> {
    work: F,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Typed<T, F>
where
    T: Send + 'static,
    F: Fn(&Tx<'_, '_>) -> Result<T, StoreError> + Send + 'static,
{
    fn run(&mut self, tx: &Tx<'_, '_>) -> Ran {
        if !tx.careful {
            let before = tx.changes();
            let r = (self.work)(tx);
            let poisoned = r.is_err() && tx.changes() != before;
            self.result = Some(r);
            return if poisoned { Ran::Poisoned } else { Ran::Clean };
        }
        let result = match exec_prepared(tx, "SAVEPOINT job", []).map_err(backend) {
            Err(e) => Err(e),
            Ok(_) => {
                let r = (self.work)(tx);
                let undo = if r.is_ok() { Ok(0) } else { tx.roll_back_to("ROLLBACK TO job") };
                match undo.and_then(|_| exec_prepared(tx, "RELEASE job", [])).map_err(backend) {
                    Ok(_) => r,
                    // The job's own error says more than the failed undo (after SQLITE_FULL,
                    // SQLite may have rolled back the transaction, savepoint and all).
                    Err(e) => Err(r.err().unwrap_or(e)),
                }
            }
        };
        self.result = Some(result);
        Ran::Clean
    }

    fn failure(&self) -> Option<Failed> {
        match &self.result {
            Some(Err(e)) => Some(Failed::store(e)),
            _ => None,
        }
    }

    fn finish(self: Box<Self>, commit: Result<(), Failed>) {
        let result = match commit {
            Ok(()) => self.result.unwrap_or_else(|| Err(StoreError::Backend("job not run".into()))),
            Err(failed) => Err(failed.error()),
        };
        let _ = self.reply.send(result); // the caller may have gone away; nothing to do then
    }
}

/// The handle to the writer thread.
pub(super) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// True while the last group that wrote failed for a full disk (no write has committed
    /// since); set and cleared by the writer thread only.
    full: Arc<AtomicBool>,
}

/// The write `check_space` tries while the disk was last seen full: it rewrites one row as
/// it is, which dirties a page, so its COMMIT must append to the WAL like any real write.
const SPACE_PROBE: &str = "UPDATE schema_migrations SET version = version
     WHERE version = (SELECT MAX(version) FROM schema_migrations)";

impl Writer {
    pub(super) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let full = Arc::new(AtomicBool::new(false));
        let seen = full.clone();
        std::thread::Builder::new()
            .name("payhook-sqlite-writer".into())
            .spawn(move || run(conn, queue, &seen))
            .map_err(|e| StoreError::Backend(format!("starting the writer thread: {e}")))?;
        Ok(Writer { jobs, full })
    }

    /// [`StoreError::StorageFull`] while the last write failed for a full disk, for the
    /// readiness check. State, not a test write: while writes commit it costs one atomic
    /// load. Once the disk was seen full, though, it tries one tiny write ([`SPACE_PROBE`],
    /// which fails at once while the disk is still full): an idle node taken out of rotation
    /// for a full disk gets no writes, and a flag only a write can clear would keep it out
    /// after the space was freed.
    pub(super) async fn check_space(&self) -> Result<(), StoreError> {
        if !self.full.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.submit(|tx| exec_prepared(tx, SPACE_PROBE, []).map(drop).map_err(backend)).await
    }

    /// Runs `work` in the writer's current transaction and returns once that transaction is
    /// committed. `work` may run twice (see the module docs); only its last run counts.
    pub(super) async fn submit<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Tx<'_, '_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Typed { work, result: None, reply });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Backend("the SQLite writer thread has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Backend("the SQLite writer dropped a job".into()))?
    }
}

/// Under load, how long the writer waits for more jobs before it commits a small group (the
/// idea of PostgreSQL's `commit_delay`): one commit writes every page it dirtied and fsyncs,
/// so a few more jobs per group cost far less than a group of their own. The wait ends at
/// [`LINGER_UNTIL`] jobs; an idle writer (the last group held one job) commits at once.
const LINGER: Duration = Duration::from_micros(200);
/// Jobs in a group that end the wait for more.
const LINGER_UNTIL: usize = 64;

/// The next group: `first`, everything queued behind it, and, when `busy`, what arrives
/// within [`LINGER`] until the group holds [`LINGER_UNTIL`] jobs.
fn gather(
    queue: &mpsc::Receiver<Box<dyn Job>>,
    first: Box<dyn Job>,
    busy: bool,
) -> Vec<Box<dyn Job>> {
    let mut group = vec![first];
    let until = busy.then(|| Instant::now() + LINGER);
    while group.len() < MAX_GROUP {
        let next = match queue.try_recv() {
            Ok(job) => Some(job),
            Err(_) => match until {
                Some(until) if group.len() < LINGER_UNTIL => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        None
                    } else {
                        queue.recv_timeout(left).ok()
                    }
                }
                _ => None,
            },
        };
        match next {
            Some(job) => group.push(job),
            None => break,
        }
    }
    group
}

/// The writer thread: take what is queued, run it in one transaction, commit, answer.
fn run(conn: Connection, queue: mpsc::Receiver<Box<dyn Job>>, full: &AtomicBool) {
    let prepared = Prepared::new(&conn);
    let mut last_group = 0;
    while let Ok(first) = queue.recv() {
        let mut group = gather(&queue, first, last_group > 1);
        last_group = group.len();
        let before = conn.total_changes();
        let commit = commit_group(&prepared, &mut group);
        // The last write's outcome, for `check_space`: a group that changed nothing and
        // failed nothing (reads) says nothing about the disk.
        match &commit {
            Err(failed) => full.store(failed.full, Ordering::Relaxed),
            Ok(()) if conn.total_changes() != before => full.store(false, Ordering::Relaxed),
            Ok(()) => {
                if group.iter().any(|job| job.failure().is_some_and(|f| f.full)) {
                    full.store(true, Ordering::Relaxed);
                }
            }
        }
        for job in group {
            job.finish(commit.clone());
        }
    }
}

fn commit_group(writer: &Prepared<'_>, group: &mut [Box<dyn Job>]) -> Result<(), Failed> {
    exec_prepared(writer, "BEGIN IMMEDIATE", []).map_err(Failed::sqlite)?;
    let fast = Tx { prepared: writer, careful: false };
    let mut poisoned = false;
    for job in group.iter_mut() {
        poisoned = matches!(job.run(&fast), Ran::Poisoned);
        still_in_transaction(writer, job.as_ref())?;
        if poisoned {
            break;
        }
    }
    if poisoned {
        // Undo everything and run the group again, each job in its own savepoint.
        rollback(writer)?;
        exec_prepared(writer, "BEGIN IMMEDIATE", []).map_err(Failed::sqlite)?;
        let careful = Tx { prepared: writer, careful: true };
        for job in group.iter_mut() {
            job.run(&careful);
            still_in_transaction(writer, job.as_ref())?;
        }
    }
    if let Err(e) = super::health::flush(writer) {
        let _ = rollback(writer);
        return Err(Failed::store(&e));
    }
    exec_prepared(writer, "COMMIT", []).map(drop).map_err(|e| {
        // After SQLITE_FULL at COMMIT, SQLite has already rolled back (measured): this
        // ROLLBACK then fails harmlessly, and the caches are forgotten either way.
        let _ = rollback(writer);
        Failed::sqlite(e)
    })
}

/// Fails the group when `job`'s error made SQLite roll the whole transaction back (it does
/// on `SQLITE_FULL` or an I/O error in a statement without a statement journal): the jobs
/// run so far were undone, and the next would run in autocommit, each statement committed
/// alone.
fn still_in_transaction(writer: &Prepared<'_>, job: &dyn Job) -> Result<(), Failed> {
    if !writer.conn.is_autocommit() {
        return Ok(());
    }
    super::forget_writer_caches();
    Err(job.failure().unwrap_or_else(|| Failed {
        full: false,
        message: "SQLite ended the group's transaction".into(),
    }))
}

/// Rolls the group's transaction back, and with it what the writer thread cached from it.
fn rollback(writer: &Prepared<'_>) -> Result<(), Failed> {
    super::forget_writer_caches();
    exec_prepared(writer, "ROLLBACK", []).map(drop).map_err(Failed::sqlite)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (tempfile::TempDir, Writer) {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = Connection::open(dir.path().join("w.db")).expect("open");
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
            .expect("schema");
        (dir, Writer::start(conn).expect("writer"))
    }

    #[test]
    fn prepared_statements_are_reused_and_one_in_use_is_prepared_again_when_nested() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = Connection::open(dir.path().join("p.db")).expect("open");
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
            .expect("schema");
        const INSERT: &str = "INSERT INTO t (k, v) VALUES (?1, ?2)";
        const GET: &str = "SELECT v FROM t WHERE k = ?1";
        let p = Prepared::new(&conn);
        exec_prepared(&p, INSERT, rusqlite::params!["a", 1]).expect("first insert");
        exec_prepared(&p, INSERT, rusqlite::params!["b", 2])
            .expect("second insert, same statement");
        assert_eq!(p.idle.borrow().len(), 1, "one statement, prepared once");
        let both = p
            .with_sql(GET, |outer| {
                let a: i64 = outer.query_row(["a"], |r| r.get(0))?;
                let b: i64 = p.with_sql(GET, |inner| inner.query_row(["b"], |r| r.get(0)))?;
                Ok((a, b))
            })
            .expect("nested reads");
        assert_eq!(both, (1, 2));
        // A statement that failed goes back ready for its next use.
        assert!(exec_prepared(&p, INSERT, rusqlite::params!["a", 3]).is_err(), "duplicate key");
        exec_prepared(&p, INSERT, rusqlite::params!["c", 3]).expect("insert after a failed one");
        let n: i64 =
            conn.query_row("SELECT COUNT(*) + SUM(v) FROM t", [], |r| r.get(0)).expect("sum");
        assert_eq!(n, 3 + 6);
    }

    fn job() -> Box<dyn Job> {
        let (reply, _answer) = oneshot::channel::<Result<(), StoreError>>();
        Box::new(Typed { work: |_: &Tx<'_, '_>| Ok(()), result: None, reply })
    }

    #[test]
    fn a_group_is_what_is_queued_and_a_busy_writer_lingers_for_more() {
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            tx.send(job()).expect("queued");
        }
        assert_eq!(gather(&rx, job(), false).len(), 4, "the first job and the three queued");
        assert_eq!(gather(&rx, job(), false).len(), 1, "idle: nothing queued, nothing more");
        let started = Instant::now();
        assert_eq!(gather(&rx, job(), true).len(), 1, "busy, but nothing came");
        assert!(started.elapsed() >= LINGER, "busy: waited for more before committing");
    }

    async fn count(w: &Writer) -> i64 {
        w.submit(|tx| tx.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).map_err(backend))
            .await
            .expect("count")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_failing_after_its_first_write_rolls_back_alone_and_the_group_commits() {
        let (_dir, w) = writer();
        let w = std::sync::Arc::new(w);
        // Many jobs queued at once so they share groups with the failing ones.
        let mut tasks = Vec::new();
        for i in 0..200 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                w.submit(move |tx| {
                    exec_prepared(tx, "INSERT INTO t (k, v) VALUES (?1, 1)", [format!("k{i}")])
                        .map_err(backend)?;
                    if i % 7 == 0 {
                        // Fails after writing: must leave nothing behind.
                        return Err(StoreError::Conflict(format!("job {i}")));
                    }
                    Ok(i)
                })
                .await
            }));
        }
        let mut ok = 0;
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.expect("task") {
                Ok(n) => {
                    assert_eq!(n, i);
                    ok += 1;
                }
                Err(StoreError::Conflict(why)) => assert_eq!(why, format!("job {i}")),
                Err(e) => panic!("job {i}: unexpected {e}"),
            }
        }
        assert_eq!(ok, 200 - 29);
        assert_eq!(count(&w).await, 200 - 29);
        let failed: i64 = w
            .submit(|tx| {
                tx.query_row("SELECT COUNT(*) FROM t WHERE k IN ('k0', 'k7', 'k196')", [], |r| {
                    r.get(0)
                })
                .map_err(backend)
            })
            .await
            .expect("query");
        assert_eq!(failed, 0, "the failed jobs' rows were rolled back");
    }

    /// `max_page_count` makes SQLite answer `SQLITE_FULL` in the middle of a group, as a
    /// full disk does when the page cache spills: whether SQLite then rolls back only the
    /// statement or the whole transaction, a job is answered Ok exactly when its row is
    /// stored, and the job that met the full disk is answered `StorageFull`.
    #[test]
    fn a_statement_failing_for_a_full_disk_stores_exactly_what_is_answered_ok() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = Connection::open(dir.path().join("f.db")).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB NOT NULL)",
        )
        .expect("schema");
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).expect("pages");
        let _: i64 = conn
            .query_row(&format!("PRAGMA max_page_count = {}", pages + 2), [], |r| r.get(0))
            .expect("cap the file");
        let prepared = Prepared::new(&conn);
        let insert = |k: &'static str, size: usize| {
            let (reply, answer) = oneshot::channel::<Result<(), StoreError>>();
            let work = move |tx: &Tx<'_, '_>| {
                let sql = "INSERT INTO t (k, v) VALUES (?1, ?2)";
                exec_prepared(tx, sql, rusqlite::params![k, vec![0u8; size]])
                    .map(drop)
                    .map_err(backend)
            };
            (Box::new(Typed { work, result: None, reply }) as Box<dyn Job>, (k, answer))
        };
        let (jobs, mut answers): (Vec<_>, Vec<_>) =
            [insert("a", 10), insert("big", 1 << 20), insert("c", 10)].into_iter().unzip();
        let mut group = jobs;
        let commit = commit_group(&prepared, &mut group);
        for job in group {
            job.finish(commit.clone());
        }
        for (k, answer) in &mut answers {
            let answered = answer.try_recv().expect("answered");
            let stored: i64 = conn
                .query_row("SELECT COUNT(*) FROM t WHERE k = ?1", [*k], |r| r.get(0))
                .expect("count");
            assert_eq!(answered.is_ok(), stored == 1, "{k}: answered {answered:?}");
            if *k == "big" {
                assert!(matches!(answered, Err(StoreError::StorageFull(_))), "{answered:?}");
            }
        }
        assert!(conn.is_autocommit(), "the group's transaction ended");
    }

    #[tokio::test]
    async fn a_job_failing_before_writing_is_answered_without_a_rerun() {
        let (_dir, w) = writer();
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = runs.clone();
        let r: Result<(), _> = w
            .submit(move |_tx| {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(StoreError::NotFound)
            })
            .await;
        assert!(matches!(r, Err(StoreError::NotFound)));
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(count(&w).await, 0);
    }
}
