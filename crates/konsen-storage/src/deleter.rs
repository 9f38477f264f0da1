//! [`Deleter`]: removes the history records a compaction dropped, beside
//! the node loop, as etcd's backend does after its index compaction.
//!
//! Applying a `Compact` entry records the compacted revision and takes the
//! dropped versions out of the history index at once, so no read reaches
//! them any more; the records themselves are deleted here, in batches of
//! at most [`DELETES_PER_BATCH_MAX`], oldest revision first. Written in
//! the apply batch, a compaction's deletes (one per put since the last
//! one) held the node loop up for as long as they took
//! (docs/performance.md, "What the history costs a put").
//!
//! Oldest first matters for a crash: what a crash leaves of a key's
//! dropped versions is then its newest ones, which the compaction rule at
//! the recorded compacted revision drops again when the store opens
//! (`KvStore::open` hands them here). In another order, an old put whose
//! later delete was already removed would read as live.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rocksdb::WriteBatch;

use crate::db::Db;

/// History records deleted per write.
pub(crate) const DELETES_PER_BATCH_MAX: usize = 1000;
/// Compactions waiting to be deleted. A compaction applied while this many
/// wait blocks until one is done, so the backlog stays bounded.
pub(crate) const DELETE_JOBS_MAX: usize = 4;

#[derive(Debug)]
enum Job {
    /// Delete these history keys of column family `cf`.
    Delete {
        cf: &'static str,
        keys: Vec<Vec<u8>>,
    },
    /// Answer once every job before this one is done.
    Barrier(SyncSender<()>),
    Stop,
}

/// A handle to the deleter thread; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct DeleterHandle {
    jobs: SyncSender<Job>,
}

impl DeleterHandle {
    /// Queues the deletion of `keys` (history keys) from `cf`; blocks while
    /// [`DELETE_JOBS_MAX`] compactions wait.
    pub(crate) fn delete(&self, cf: &'static str, mut keys: Vec<Vec<u8>>) {
        if keys.is_empty() {
            return;
        }
        // History keys sort by revision first: oldest first.
        keys.sort_unstable();
        // The thread is gone only once the store is dropped.
        let _ = self.jobs.send(Job::Delete { cf, keys });
    }

    /// Waits until every deletion queued before it is written.
    pub(crate) fn wait(&self) {
        let (tx, rx) = sync_channel(1);
        if self.jobs.send(Job::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// The deleter thread, stopped and joined when dropped (after the work
/// queued before).
#[derive(Debug)]
pub(crate) struct Deleter {
    handle: DeleterHandle,
    thread: Option<JoinHandle<()>>,
}

impl Deleter {
    pub(crate) fn start(db: Arc<Db>) -> Deleter {
        let (jobs, rx) = sync_channel(DELETE_JOBS_MAX);
        let thread = std::thread::Builder::new()
            .name("konsen-deleter".into())
            .spawn(move || run(&db, &rx))
            .expect("deleter invariant: the thread can be started");
        Deleter {
            handle: DeleterHandle { jobs },
            thread: Some(thread),
        }
    }

    pub(crate) fn handle(&self) -> &DeleterHandle {
        &self.handle
    }
}

impl Drop for Deleter {
    fn drop(&mut self) {
        let _ = self.handle.jobs.send(Job::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(db: &Db, jobs: &Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Delete { cf, keys } => {
                for chunk in keys.chunks(DELETES_PER_BATCH_MAX) {
                    let mut batch = WriteBatch::default();
                    for key in chunk {
                        batch.delete_cf(db.cf(cf), key);
                    }
                    // What is not deleted is found again when the store
                    // next opens.
                    if let Err(e) = db.write(batch, false) {
                        tracing::error!("cannot delete compacted history records: {e}");
                        break;
                    }
                    std::thread::yield_now();
                }
            }
            Job::Barrier(done) => {
                let _ = done.send(());
            }
            Job::Stop => return,
        }
    }
}
