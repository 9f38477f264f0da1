//! etcd's Watch service: the bidirectional `Watch.Watch` stream, on every
//! node.
//!
//! Each stream is one task holding its watchers. It follows the node's
//! change feed (`feed.rs`, one shared fan-out: an applied batch is read by
//! every stream from the same `Arc`) and answers its client's create,
//! cancel and progress requests. As in etcd, a watcher is either *synced*,
//! fed from the live batches, or *unsynced*, reading the history
//! (`KvReader::changes`) page by page until it reaches the live edge: a
//! watcher created at a past revision starts unsynced, and so does every
//! watcher of a stream that lagged behind the feed or saw a snapshot
//! install. Writes never wait for a watcher.
//!
//! The stream's position is `processed`: every change up to it has been
//! seen by the synced watchers (delivered or filtered out). A synced
//! watcher's next revision is at least `processed + 1`; progress
//! notifications report `processed`, never a revision whose events are
//! still on their way.
//!
//! Limits: `limits.watch_streams_max` streams per node,
//! `limits.watchers_per_stream_max` watchers per stream,
//! `WATCH_RESPONSES_MAX` responses queued per stream, and a client that
//! reads nothing for `WATCH_SEND_STALL_MAX` has its stream closed with an
//! error.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use konsen_rpc::convert::{WatchSpec, change_to_event, watch_spec_from_etcd};
use konsen_rpc::etcd::etcdserverpb::{
    WatchRequest, WatchResponse, watch_request::RequestUnion, watch_server::Watch,
};
use konsen_rpc::etcd::mvccpb;
use konsen_storage::{Change, KeyRange, KeyValue, RangeRequest, RequestError, StorageError};
use prost::Message as _;
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc, oneshot, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use super::{Shared, blocking, node_status};
use crate::feed::FeedBatch;
use crate::node::NodeError;

/// Responses queued for one stream's client; the stream's task waits
/// (and its watchers fall behind into the history) while it is full.
pub const WATCH_RESPONSES_MAX: usize = 16;
/// Changes read from the history per page while a watcher catches up.
pub const WATCH_CHANGES_PAGE_MAX: usize = 1000;
/// How long a stream waits for its client to take a response before it
/// closes the stream with an error (a client that stopped reading).
pub const WATCH_SEND_STALL_MAX: Duration = Duration::from_secs(60);

/// etcd's words for a watch that cannot start from its revision.
const COMPACTED_REASON: &str = "etcdserver: mvcc: required revision has been compacted";

#[derive(Clone, Debug)]
pub struct WatchService {
    shared: Shared,
    shutdown: watch::Receiver<bool>,
}

impl WatchService {
    pub fn new(shared: Shared, shutdown: watch::Receiver<bool>) -> Self {
        WatchService { shared, shutdown }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let permit = Arc::clone(&self.shared.watch_streams)
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(
                    "etcdserver: too many watch streams (limits.watch_streams_max reached)",
                )
            })?;
        // Subscribe before reading the revision: every change above it is
        // then in the feed (or announced there as a gap).
        let feed = self.shared.hub.subscribe();
        let (revision, _) = self
            .shared
            .reader
            .revisions()
            .map_err(|e| node_status(&NodeError::from(e)))?;
        let (tx, rx) = mpsc::channel(WATCH_RESPONSES_MAX);
        let (last_tx, last_rx) = oneshot::channel();
        let stream = WatchStream {
            shared: self.shared.clone(),
            tx,
            last: Some(last_tx),
            watchers: BTreeMap::new(),
            by_key: HashMap::new(),
            ranged: Vec::new(),
            processed: revision,
            next_id: 0,
        };
        tokio::spawn(stream.run(request.into_inner(), feed, self.shutdown.clone(), permit));
        Ok(Response::new(ResponseStream {
            rx,
            last: Some(last_rx),
        }))
    }
}

/// The responses of one watch stream, ended by the error that closed it,
/// if one did.
pub struct ResponseStream {
    rx: mpsc::Receiver<Result<WatchResponse, Status>>,
    last: Option<oneshot::Receiver<Status>>,
}

impl Stream for ResponseStream {
    type Item = Result<WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) => {
                // The task sends its closing error before it drops the
                // queue, so it is there now or never.
                let last = self.last.take().and_then(|mut last| last.try_recv().ok());
                Poll::Ready(last.map(Err))
            }
            other => other,
        }
    }
}

/// The changes a feed batch holds.
fn batch_len(batch: &FeedBatch) -> usize {
    match batch {
        FeedBatch::Changes { changes, .. } => changes.len(),
        FeedBatch::Gap { .. } => 0,
    }
}

/// The client went away, or the stream was closed: stop serving it.
struct Closed;

/// One watcher of a stream.
#[derive(Debug)]
struct Watcher {
    range: KeyRange,
    spec: WatchSpec,
    /// The first revision whose changes it has not been given (or
    /// checked); for a synced watcher, `processed + 1` if that is more.
    next: i64,
    synced: bool,
    /// No event sent since the last progress tick.
    quiet: bool,
}

impl Watcher {
    fn wants(&self, change: &Change) -> bool {
        self.range.contains(&change.key)
            && !(self.spec.no_put && change.state.is_some())
            && !(self.spec.no_delete && change.state.is_none())
    }
}

struct WatchStream {
    shared: Shared,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    /// Where the error that closes the stream goes.
    last: Option<oneshot::Sender<Status>>,
    watchers: BTreeMap<i64, Watcher>,
    /// Watchers of one key, by key; the others are in `ranged`.
    by_key: HashMap<Vec<u8>, Vec<i64>>,
    ranged: Vec<i64>,
    processed: i64,
    /// Where the search for a free id starts (etcd's `nextID`).
    next_id: i64,
}

impl WatchStream {
    async fn run(
        mut self,
        mut inbound: Streaming<WatchRequest>,
        mut feed: broadcast::Receiver<Arc<FeedBatch>>,
        mut shutdown: watch::Receiver<bool>,
        _permit: OwnedSemaphorePermit,
    ) {
        let every = self.shared.settings.watch_progress_notify_interval;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whether the client may still send requests. One that closed its
        // side (etcd's JSON gateway does, after its one create) still gets
        // its events, as from etcd, until it goes away.
        let mut requests_open = true;
        loop {
            let catching_up = self.watchers.values().any(|w| !w.synced);
            let turn = tokio::select! {
                biased;
                () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                    self.close(Status::unavailable("etcdserver: server stopped"));
                    break;
                }
                () = self.tx.closed() => break,
                request = inbound.message(), if requests_open => match request {
                    Ok(Some(request)) => self.on_request(request).await,
                    Ok(None) => {
                        requests_open = false;
                        Ok(())
                    }
                    // The call broke (the client reset it).
                    Err(_) => break,
                },
                () = std::future::ready(()), if catching_up => self.catch_up().await,
                batch = feed.recv() => match batch {
                    Ok(batch) => {
                        // A stream behind the feed takes what else is
                        // there too, and sends it as one response per
                        // watcher: a slow client catches up by the page,
                        // not by the batch.
                        let mut changes = batch_len(&batch);
                        let mut batches = vec![batch];
                        let mut lagged = false;
                        while changes < WATCH_CHANGES_PAGE_MAX {
                            match feed.try_recv() {
                                Ok(batch) => {
                                    changes += batch_len(&batch);
                                    batches.push(batch);
                                }
                                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                    lagged = true;
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        let turn = self.on_batches(&batches).await;
                        if lagged && turn.is_ok() {
                            self.on_lagged()
                        } else {
                            turn
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        debug!(missed, "watch stream lagged behind the feed; reading the history");
                        self.on_lagged()
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        self.close(Status::unavailable("etcdserver: server stopped"));
                        break;
                    }
                },
                _ = progress.tick() => self.on_progress_tick().await,
            };
            if turn.is_err() {
                break;
            }
        }
    }

    /// Ends the stream with `status` after what is queued.
    fn close(&mut self, status: Status) -> Closed {
        if let Some(last) = self.last.take() {
            let _ = last.send(status);
        }
        Closed
    }

    async fn send(&mut self, response: WatchResponse) -> Result<(), Closed> {
        let response = match self.tx.try_send(Ok(response)) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Closed),
            Err(mpsc::error::TrySendError::Full(response)) => response,
        };
        match tokio::time::timeout(WATCH_SEND_STALL_MAX, self.tx.send(response)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Closed),
            Err(_) => {
                warn!(
                    "closing a watch stream: its client read nothing for {WATCH_SEND_STALL_MAX:?}"
                );
                Err(self.close(Status::resource_exhausted(format!(
                    "etcdserver: watch stream closed: the client read no event for \
                     {WATCH_SEND_STALL_MAX:?}"
                ))))
            }
        }
    }

    fn current_revision(&self) -> Result<i64, Status> {
        self.shared
            .reader
            .revisions()
            .map(|(revision, _)| revision)
            .map_err(|e| node_status(&NodeError::from(e)))
    }

    fn response(&self, revision: i64, watch_id: i64) -> WatchResponse {
        WatchResponse {
            header: Some(self.shared.header(revision, self.shared.node.status().term)),
            watch_id,
            ..WatchResponse::default()
        }
    }

    async fn on_request(&mut self, request: WatchRequest) -> Result<(), Closed> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                self.create(watch_spec_from_etcd(create)).await
            }
            Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
            Some(RequestUnion::ProgressRequest(_)) => self.progress_all().await,
            None => Ok(()),
        }
    }

    async fn create(&mut self, spec: WatchSpec) -> Result<(), Closed> {
        let (revision, compacted) = match self.shared.reader.revisions() {
            Ok(revisions) => revisions,
            Err(e) => return Err(self.close(node_status(&NodeError::from(e)))),
        };
        let range = KeyRange::new(spec.key.clone(), spec.range_end.clone());
        let refusal = if spec.start_revision < 0 {
            Some(COMPACTED_REASON.to_string())
        } else if range.is_empty() {
            Some("mvcc: watcher range is empty".to_string())
        } else if spec.watch_id != 0 && self.watchers.contains_key(&spec.watch_id) {
            Some("mvcc: duplicate watch ID provided on the WatchStream".to_string())
        } else if self.watchers.len() >= self.shared.settings.limits.watchers_per_stream_max {
            Some(format!(
                "etcdserver: too many watchers on this stream (limits.watchers_per_stream_max \
                 is {})",
                self.shared.settings.limits.watchers_per_stream_max
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            let mut response = self.response(revision, -1);
            response.created = true;
            response.canceled = true;
            response.cancel_reason = reason;
            return self.send(response).await;
        }
        let id = if spec.watch_id != 0 {
            spec.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let mut created = self.response(revision, id);
        created.created = true;
        self.send(created).await?;
        if spec.start_revision > 0 && spec.start_revision < compacted {
            // etcd: created, then canceled with the compacted revision.
            let mut response = self.response(revision, id);
            response.compact_revision = compacted;
            response.canceled = true;
            return self.send(response).await;
        }
        let next = if spec.start_revision == 0 {
            revision + 1
        } else {
            spec.start_revision
        };
        match range.single_key() {
            Some(key) => self.by_key.entry(key.to_vec()).or_default().push(id),
            None => self.ranged.push(id),
        }
        self.watchers.insert(
            id,
            Watcher {
                range,
                spec,
                next,
                synced: next > self.processed,
                quiet: true,
            },
        );
        Ok(())
    }

    fn remove(&mut self, id: i64) -> Option<Watcher> {
        let watcher = self.watchers.remove(&id)?;
        match watcher.range.single_key() {
            Some(key) => {
                if let Some(ids) = self.by_key.get_mut(key) {
                    ids.retain(|&i| i != id);
                    if ids.is_empty() {
                        self.by_key.remove(key);
                    }
                }
            }
            None => self.ranged.retain(|&i| i != id),
        }
        Some(watcher)
    }

    /// Cancels watcher `id`; etcd ignores an unknown id.
    async fn cancel(&mut self, id: i64) -> Result<(), Closed> {
        if self.remove(id).is_none() {
            return Ok(());
        }
        let revision = match self.current_revision() {
            Ok(revision) => revision,
            Err(status) => return Err(self.close(status)),
        };
        let mut response = self.response(revision, id);
        response.canceled = true;
        self.send(response).await
    }

    /// A progress request: the revision every watcher has seen, if every
    /// watcher is at the live edge (else the answer would claim events
    /// not yet sent, so none is given).
    async fn progress_all(&mut self) -> Result<(), Closed> {
        if self.watchers.is_empty() || self.watchers.values().any(|w| !w.synced) {
            return Ok(());
        }
        let response = self.response(self.processed, -1);
        self.send(response).await
    }

    /// The periodic progress notification, for watchers that asked for it
    /// and had no event since the last one.
    async fn on_progress_tick(&mut self) -> Result<(), Closed> {
        let due: Vec<i64> = self
            .watchers
            .iter_mut()
            .filter_map(|(&id, w)| {
                let due = w.synced && w.quiet && w.spec.progress_notify;
                w.quiet = true;
                due.then_some(id)
            })
            .collect();
        for id in due {
            let response = self.response(self.processed, id);
            self.send(response).await?;
        }
        Ok(())
    }

    /// The ids of the watchers whose range holds `key`.
    fn watching<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = i64> + 'a {
        let single = self.by_key.get(key).into_iter().flatten().copied();
        let ranged = self
            .ranged
            .iter()
            .copied()
            .filter(move |id| self.watchers[id].range.contains(key));
        single.chain(ranged)
    }

    /// Delivers consecutive feed batches: the changes of each run of
    /// `Changes` batches as one response per watcher (headed with the last
    /// batch's revision), a `Gap` in between as a gap.
    async fn on_batches(&mut self, batches: &[Arc<FeedBatch>]) -> Result<(), Closed> {
        let mut out: BTreeMap<i64, Vec<&Change>> = BTreeMap::new();
        let mut revision = self.processed;
        for batch in batches {
            let (batch_revision, changes) = match &**batch {
                FeedBatch::Changes { revision, changes } => (*revision, changes),
                FeedBatch::Gap { revision: gap } => {
                    self.flush(std::mem::take(&mut out), revision).await?;
                    self.on_gap(*gap);
                    continue;
                }
            };
            for change in changes.iter().filter(|c| c.revision > self.processed) {
                for id in self.watching(&change.key) {
                    let w = &self.watchers[&id];
                    if w.synced
                        && change.revision >= w.next.max(self.processed + 1)
                        && w.wants(change)
                    {
                        out.entry(id).or_default().push(change);
                    }
                }
            }
            self.processed = self.processed.max(batch_revision);
            revision = self.processed;
        }
        self.flush(out, revision).await
    }

    async fn flush(
        &mut self,
        out: BTreeMap<i64, Vec<&Change>>,
        revision: i64,
    ) -> Result<(), Closed> {
        for (id, changes) in out {
            self.deliver(id, &changes, revision).await?;
        }
        Ok(())
    }

    /// The feed dropped batches this stream had not read: everything up
    /// to the store's revision now is a gap.
    fn on_lagged(&mut self) -> Result<(), Closed> {
        let revision = self
            .current_revision()
            .map_err(|status| self.close(status))?;
        self.on_gap(revision);
        Ok(())
    }

    /// The state moved to `revision` without this stream seeing the
    /// changes: every watcher that has not seen them reads them from the
    /// history.
    fn on_gap(&mut self, revision: i64) {
        if self.shared.settings.unsafe_watch_ignore_gaps {
            // The negative control: the missed changes are skipped.
            self.processed = self.processed.max(revision);
            return;
        }
        let live = self.processed + 1;
        for w in self.watchers.values_mut() {
            if w.synced {
                w.next = w.next.max(live);
            }
            if w.next <= revision {
                w.synced = false;
            }
        }
        self.processed = self.processed.max(revision);
    }

    /// Reads one page of the history for the unsynced watchers, delivers
    /// it, and marks those that reached the live edge synced.
    async fn catch_up(&mut self) -> Result<(), Closed> {
        let behind: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| !w.synced)
            .map(|(&id, _)| id)
            .collect();
        let Some(from) = behind.iter().map(|id| self.watchers[id].next).min() else {
            return Ok(());
        };
        // One watcher reads its own range; several read every key once.
        let (key, range_end) = match behind.as_slice() {
            [id] => {
                let spec = &self.watchers[id].spec;
                (spec.key.clone(), spec.range_end.clone())
            }
            _ => (vec![0], vec![0]),
        };
        let reader = self.shared.reader.clone();
        let read = match blocking("watch history read", move || {
            reader.changes(key, range_end, from, WATCH_CHANGES_PAGE_MAX)
        })
        .await
        {
            Ok(read) => read,
            Err(status) => return Err(self.close(status)),
        };
        let page = match read {
            Ok(page) => page,
            Err(StorageError::Request(RequestError::Compacted { compacted, .. })) => {
                let revision = match self.current_revision() {
                    Ok(revision) => revision,
                    Err(status) => return Err(self.close(status)),
                };
                for id in behind {
                    if self.watchers[&id].next < compacted {
                        self.remove(id);
                        let mut response = self.response(revision, id);
                        response.compact_revision = compacted;
                        response.canceled = true;
                        self.send(response).await?;
                    }
                }
                return Ok(());
            }
            Err(e) => return Err(self.close(node_status(&NodeError::from(e)))),
        };
        let mut out: BTreeMap<i64, Vec<&Change>> = BTreeMap::new();
        for change in &page.changes {
            for &id in &behind {
                let w = &self.watchers[&id];
                if change.revision >= w.next && w.wants(change) {
                    out.entry(id).or_default().push(change);
                }
            }
        }
        for (id, changes) in out {
            self.deliver(id, &changes, page.revision).await?;
        }
        for id in behind {
            if let Some(w) = self.watchers.get_mut(&id) {
                w.next = w.next.max(page.next);
                w.synced = w.next > self.processed;
            }
        }
        Ok(())
    }

    /// Sends `changes` to watcher `id` as one response, or as fragments
    /// if it asked for them and the response is too large for one message.
    async fn deliver(&mut self, id: i64, changes: &[&Change], revision: i64) -> Result<(), Closed> {
        let Some(w) = self.watchers.get_mut(&id) else {
            return Ok(());
        };
        w.quiet = false;
        let (prev_kv, fragment) = (w.spec.prev_kv, w.spec.fragment);
        let events: Vec<mvccpb::Event> = changes
            .iter()
            .map(|c| change_to_event(c, if prev_kv { self.prev_kv(c) } else { None }))
            .collect();
        let mut response = self.response(revision, id);
        let limit = self.shared.settings.limits.request_bytes_max;
        let size: usize = events.iter().map(|e| e.encoded_len()).sum();
        if !fragment || events.len() < 2 || size < limit {
            response.events = events;
            return self.send(response).await;
        }
        // etcd's fragments: as many events per response as fit under the
        // limit (at least one), `fragment` set on all but the last.
        let mut pieces: Vec<Vec<mvccpb::Event>> = vec![Vec::new()];
        let mut piece_size = 0;
        for event in events {
            let len = event.encoded_len();
            let current = pieces.last_mut().expect("fragments start with one piece");
            if !current.is_empty() && piece_size + len > limit {
                pieces.push(Vec::new());
                piece_size = 0;
            }
            piece_size += len;
            pieces
                .last_mut()
                .expect("fragments start with one piece")
                .push(event);
        }
        let count = pieces.len();
        for (i, events) in pieces.into_iter().enumerate() {
            let mut piece = response.clone();
            piece.events = events;
            piece.fragment = i + 1 < count;
            self.send(piece).await?;
        }
        Ok(())
    }

    /// The pair a change replaced, for `prev_kv`: none for a create, or if
    /// the history no longer has it.
    fn prev_kv(&self, change: &Change) -> Option<KeyValue> {
        if change
            .state
            .as_ref()
            .is_some_and(|kv| kv.create_revision == kv.mod_revision)
        {
            return None;
        }
        let request = RangeRequest {
            key: change.key.clone(),
            revision: change.revision - 1,
            ..RangeRequest::default()
        };
        self.shared
            .reader
            .range(&request)
            .ok()
            .and_then(|r| r.kvs.into_iter().next())
    }
}
