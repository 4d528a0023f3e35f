//! Group commit for SQLite: one thread owns the write connection and commits every write that
//! arrived while the previous commit was syncing in ONE transaction, so a burst of N status
//! reports costs one fsync instead of N.
//!
//! Each job runs inside its own savepoint: a job that fails rolls back alone and reports its
//! error; the others commit. Every job's caller is answered only after the COMMIT returned, so
//! "answered Ok" still means "on disk".

use super::rows::{backend, exec};
use crate::StoreError;
use rusqlite::Connection;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Jobs committed together at most (bounds the latency a job can add to its group).
const MAX_GROUP: usize = 512;

/// A unit of work for the writer thread.
trait Job: Send {
    /// Runs in a savepoint of the open transaction, keeping its result for `finish`.
    fn run(&mut self, conn: &Connection);
    /// Answers the caller once the group's commit is known.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct Typed<T, F> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Typed<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) {
        let work = self.work.take().expect("a job runs once");
        let result = match exec(conn, "SAVEPOINT job", []).map_err(backend) {
            Err(e) => Err(e),
            Ok(_) => {
                let r = work(conn);
                let undo = if r.is_ok() { Ok(0) } else { exec(conn, "ROLLBACK TO job", []) };
                match undo.and_then(|_| exec(conn, "RELEASE job", [])).map_err(backend) {
                    Ok(_) => r,
                    Err(e) => Err(e),
                }
            }
        };
        self.result = Some(result);
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

    pub(super) async fn submit<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Typed { work: Some(work), result: None, reply });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Backend("the SQLite writer thread has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Backend("the SQLite writer dropped a job".into()))?
    }
}

/// The writer thread: take what is queued, run it in one transaction, commit, answer.
fn run(conn: Connection, queue: mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let commit = commit_group(&conn, &mut group);
        for job in group {
            job.finish(commit.clone());
        }
    }
}

fn commit_group(conn: &Connection, group: &mut [Box<dyn Job>]) -> Result<(), String> {
    exec(conn, "BEGIN IMMEDIATE", []).map_err(|e| e.to_string())?;
    for job in group.iter_mut() {
        job.run(conn);
    }
    exec(conn, "COMMIT", []).map(drop).map_err(|e| {
        let _ = exec(conn, "ROLLBACK", []);
        e.to_string()
    })
}
