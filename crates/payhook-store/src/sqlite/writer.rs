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

use super::rows::{backend, exec_prepared, Statements};
use crate::StoreError;
use rusqlite::{Connection, PrepFlags, Statement};
use std::cell::RefCell;
use std::ops::Deref;
use std::sync::mpsc;
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

/// A unit of work for the writer thread.
trait Job: Send {
    fn run(&mut self, tx: &Tx<'_, '_>) -> Ran;
    /// Answers the caller once the group's commit is known.
    fn finish(self: Box<Self>, commit: Result<(), String>);
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
                    Err(e) => Err(e),
                }
            }
        };
        self.result = Some(result);
        Ran::Clean
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let result = match commit {
            Ok(()) => self.result.unwrap_or_else(|| Err(StoreError::Backend("job not run".into()))),
            Err(e) => Err(StoreError::Backend(format!("commit failed: {e}"))),
        };
        let _ = self.reply.send(result); // the caller may have gone away; nothing to do then
    }
}

/// The handle to the writer thread.
pub(super) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    pub(super) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        std::thread::Builder::new()
            .name("payhook-sqlite-writer".into())
            .spawn(move || run(conn, queue))
            .map_err(|e| StoreError::Backend(format!("starting the writer thread: {e}")))?;
        Ok(Writer { jobs })
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
fn run(conn: Connection, queue: mpsc::Receiver<Box<dyn Job>>) {
    let prepared = Prepared::new(&conn);
    let mut last_group = 0;
    while let Ok(first) = queue.recv() {
        let mut group = gather(&queue, first, last_group > 1);
        last_group = group.len();
        let commit = commit_group(&prepared, &mut group);
        for job in group {
            job.finish(commit.clone());
        }
    }
}

fn commit_group(writer: &Prepared<'_>, group: &mut [Box<dyn Job>]) -> Result<(), String> {
    exec_prepared(writer, "BEGIN IMMEDIATE", []).map_err(|e| e.to_string())?;
    let fast = Tx { prepared: writer, careful: false };
    let poisoned = group.iter_mut().any(|job| matches!(job.run(&fast), Ran::Poisoned));
    if poisoned {
        // Undo everything and run the group again, each job in its own savepoint.
        rollback(writer)?;
        exec_prepared(writer, "BEGIN IMMEDIATE", []).map_err(|e| e.to_string())?;
        let careful = Tx { prepared: writer, careful: true };
        for job in group.iter_mut() {
            job.run(&careful);
        }
    }
    if let Err(e) = super::health::flush(writer) {
        let _ = rollback(writer);
        return Err(e.to_string());
    }
    exec_prepared(writer, "COMMIT", []).map(drop).map_err(|e| {
        let _ = rollback(writer);
        e.to_string()
    })
}

/// Rolls the group's transaction back, and with it what the writer thread cached from it.
fn rollback(writer: &Prepared<'_>) -> Result<(), String> {
    super::forget_writer_caches();
    exec_prepared(writer, "ROLLBACK", []).map(drop).map_err(|e| e.to_string())
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
