//! The change feed from the node loop to the watch streams: one shared
//! fan-out. The node loop publishes what each `Ready` applied as one
//! batch behind an `Arc`; every watch stream of the node subscribes once
//! and reads the same batches, so an event is never copied per watcher.
//!
//! The channel is a ring of `WATCH_FEED_BATCHES_MAX` batches and the node
//! loop never waits for it: a stream that falls that far behind is told
//! it lagged and reads what it missed from the history instead
//! (`KvReader::changes`), as etcd moves a slow watcher to its unsynced
//! group. Writes are never held up by a watcher.

use std::sync::Arc;

use konsen_storage::Change;
use tokio::sync::broadcast;

/// Batches the feed holds for its slowest subscriber before that
/// subscriber lags (and catches up from the history).
pub const WATCH_FEED_BATCHES_MAX: usize = 1024;

/// What one `Ready` did to the key-value state, as a watch stream sees it.
#[derive(Debug)]
pub enum FeedBatch {
    /// The changes applied, in revision order, up to and including
    /// `revision`, the store's revision after them.
    Changes { revision: i64, changes: Vec<Change> },
    /// The state moved to `revision` without the changes being fed (the
    /// feed was off when the apply began, or a snapshot was installed):
    /// whoever needs them reads them from the history.
    Gap { revision: i64 },
}

/// The sending side, owned by the node loop; subscribers come from
/// [`WatchHub::subscribe`].
#[derive(Clone, Debug)]
pub struct WatchHub {
    tx: broadcast::Sender<Arc<FeedBatch>>,
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub::new()
    }
}

impl WatchHub {
    pub fn new() -> WatchHub {
        let (tx, _) = broadcast::channel(WATCH_FEED_BATCHES_MAX);
        WatchHub { tx }
    }

    /// A new subscriber, which sees every batch published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedBatch>> {
        self.tx.subscribe()
    }

    /// Whether anyone follows the feed (the store keeps its changes only
    /// then).
    pub fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Hands `batch` to every subscriber; never waits.
    pub fn publish(&self, batch: FeedBatch) {
        // No subscriber: nobody to tell.
        let _ = self.tx.send(Arc::new(batch));
    }
}
