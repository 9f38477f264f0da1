//! Watchers under the faults: one watch per node on every key the clients
//! use, from the first revision, kept through the whole run. A stream that
//! breaks (its node killed, paused, cut off) is opened again on the same
//! node from the revision after its last event, as etcd's clients resume.
//! One more watcher, on the first node, reads slowly through a small
//! HTTP/2 window, so that its stream falls behind the node's feed and
//! catches up from the history again and again.
//!
//! After the run each watcher must have seen exactly the committed
//! history: every revision from the first write to the last, once, in
//! order (every write of the clients is one revision of one key), the
//! same key and value at each revision on every node, every acknowledged
//! write among them, and nothing no client wrote.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use konsen_rpc::etcd::etcdserverpb::{
    WatchCreateRequest, WatchRequest, watch_client::WatchClient, watch_request::RequestUnion,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// The clients' keys all start with this.
pub const PREFIX: &str = "chaos-";
/// Pause before opening a broken stream again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long the slow watcher takes over each response.
const SLOW_READ: Duration = Duration::from_millis(20);
/// The slow watcher's HTTP/2 stream window: a few dozen responses.
const SLOW_WINDOW_BYTES: u32 = 8 * 1024;

/// One event as a watcher saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub revision: i64,
    pub key: String,
    /// `None`: a delete (the clients never delete).
    pub value: Option<String>,
}

/// What one watcher saw.
#[derive(Debug, Default)]
pub struct WatchLog {
    pub events: Vec<Seen>,
    /// Streams opened (1 + resumptions).
    pub streams: usize,
    /// Why the server canceled the watch, if it did.
    pub canceled: Option<String>,
    /// What happened to the last few streams, for a failure's report.
    pub notes: std::collections::VecDeque<String>,
}

/// Notes a watcher keeps.
const NOTES_MAX: usize = 6;

impl WatchLog {
    fn note(&mut self, started: tokio::time::Instant, what: String) {
        if self.notes.len() == NOTES_MAX {
            self.notes.pop_front();
        }
        self.notes
            .push_back(format!("{:.1?}: {what}", started.elapsed()));
    }
}

/// A watcher's name and log.
#[derive(Clone, Debug)]
pub struct Watching {
    pub name: String,
    pub log: Arc<Mutex<WatchLog>>,
}

/// The watchers of a run and when they stop.
#[derive(Debug)]
pub struct Watchers {
    pub watching: Vec<Watching>,
    /// Set once the final revision is known: a watcher stops past it.
    until: Arc<AtomicI64>,
    /// Stops every watcher, wherever it is.
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watchers {
    /// Starts one watcher per channel (`channels[i]` is node i + 1) and
    /// the slow one on `slow_endpoint`.
    pub fn start(channels: &[Channel], slow_endpoint: &str) -> anyhow::Result<Watchers> {
        let until = Arc::new(AtomicI64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut watching = Vec::new();
        let mut tasks = Vec::new();
        let mut start = |name: String, channel: Channel, slow: bool| {
            let log = Arc::new(Mutex::new(WatchLog::default()));
            watching.push(Watching {
                name,
                log: Arc::clone(&log),
            });
            tasks.push(tokio::spawn(watch(
                channel,
                slow,
                log,
                Arc::clone(&until),
                Arc::clone(&stop),
            )));
        };
        for (i, channel) in channels.iter().enumerate() {
            start(format!("node {}", i + 1), channel.clone(), false);
        }
        let slow = Endpoint::from_shared(format!("http://{slow_endpoint}"))?
            .connect_timeout(Duration::from_millis(500))
            .initial_stream_window_size(SLOW_WINDOW_BYTES)
            .connect_lazy();
        start(format!("slow reader on {slow_endpoint}"), slow, true);
        Ok(Watchers {
            watching,
            until,
            stop,
            tasks,
        })
    }

    /// Waits until every watcher has seen revision `last`, or `wait`
    /// passed; then stops them all.
    pub async fn finish(self, last: i64, wait: Duration) {
        self.until.store(last, Ordering::Relaxed);
        let all = async {
            for task in self.tasks {
                let _ = task.await;
            }
        };
        tokio::pin!(all);
        if tokio::time::timeout(wait, &mut all).await.is_err() {
            self.stop.store(true, Ordering::Relaxed);
            all.await;
        }
    }
}

/// Whether a watcher is done: it saw `until` (once set), or was stopped.
fn done(next: i64, until: &AtomicI64, stop: &AtomicBool) -> bool {
    let until = until.load(Ordering::Relaxed);
    stop.load(Ordering::Relaxed) || (until > 0 && next > until)
}

async fn watch(
    channel: Channel,
    slow: bool,
    log: Arc<Mutex<WatchLog>>,
    until: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
) {
    let mut next = 1;
    let started = tokio::time::Instant::now();
    while !done(next, &until, &stop) {
        log.lock().expect("watch log").streams += 1;
        let (tx, rx) = mpsc::channel(1);
        let create = WatchCreateRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: b"chaos.".to_vec(),
            start_revision: next,
            ..WatchCreateRequest::default()
        };
        let _ = tx
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(create)),
            })
            .await;
        let mut client = WatchClient::new(channel.clone());
        let stream = tokio::time::timeout(
            Duration::from_secs(1),
            client.watch(ReceiverStream::new(rx)),
        )
        .await;
        let Ok(Ok(stream)) = stream else {
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        };
        let mut stream = stream.into_inner();
        log.lock()
            .expect("watch log")
            .note(started, format!("stream opened from revision {next}"));
        while !done(next, &until, &stop) {
            // Bounded, so that the stop flags are seen.
            let response =
                match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
                    Err(_) => continue,
                    Ok(Ok(Some(response))) => response,
                    Ok(end) => {
                        log.lock()
                            .expect("watch log")
                            .note(started, format!("stream ended at revision {next}: {end:?}"));
                        break;
                    }
                };
            if response.canceled {
                log.lock().expect("watch log").canceled = Some(format!(
                    "{} (compact revision {})",
                    response.cancel_reason, response.compact_revision
                ));
                return;
            }
            {
                let mut log = log.lock().expect("watch log");
                for event in response.events {
                    let kv = event.kv.unwrap_or_default();
                    next = next.max(kv.mod_revision + 1);
                    log.events.push(Seen {
                        revision: kv.mod_revision,
                        key: String::from_utf8_lossy(&kv.key).into_owned(),
                        value: (event.r#type == 0)
                            .then(|| String::from_utf8_lossy(&kv.value).into()),
                    });
                }
            }
            if slow {
                tokio::time::sleep(SLOW_READ).await;
            }
        }
        drop(tx);
        if !done(next, &until, &stop) {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
    if stop.load(Ordering::Relaxed) {
        log.lock().expect("watch log").note(
            started,
            format!("stopped before the last revision, at {next}"),
        );
    }
}

/// Checks every watcher's events against each other and the clients'
/// writes: `written` holds every (key, value) any client may have
/// written, `acknowledged` those whose write was acknowledged; `first`
/// and `last` bound the revisions the clients' writes took.
pub fn check(
    watching: &[Watching],
    written: &HashSet<(String, String)>,
    acknowledged: &HashSet<(String, String)>,
    first: i64,
    last: i64,
) -> Result<String, String> {
    let mut reference: Option<(String, BTreeMap<i64, Seen>)> = None;
    let mut events = 0;
    let mut streams = 0;
    for w in watching {
        let log = w.log.lock().expect("watch log");
        if let Some(why) = &log.canceled {
            return Err(format!("{}: the watch was canceled: {why}", w.name));
        }
        streams += log.streams;
        events += log.events.len();
        let mut by_revision = BTreeMap::new();
        let mut previous = 0;
        for e in &log.events {
            if e.revision <= previous {
                return Err(format!(
                    "{}: revision {} after {previous} (out of order, or twice)",
                    w.name, e.revision
                ));
            }
            previous = e.revision;
            let value = e.value.clone().ok_or_else(|| {
                format!("{}: a delete at {}, but nobody deletes", w.name, e.revision)
            })?;
            if !written.contains(&(e.key.clone(), value.clone())) {
                return Err(format!(
                    "{}: {}={value} at revision {}, which no client wrote",
                    w.name, e.key, e.revision
                ));
            }
            by_revision.insert(e.revision, e.clone());
        }
        for revision in first..=last {
            if !by_revision.contains_key(&revision) {
                return Err(format!(
                    "{}: no event at revision {revision} (it saw {} events, up to {previous}, \
                     on {} streams; last: {})",
                    w.name,
                    log.events.len(),
                    log.streams,
                    log.notes.iter().cloned().collect::<Vec<_>>().join("; ")
                ));
            }
        }
        let seen: HashSet<(String, String)> = by_revision
            .values()
            .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        if let Some(missing) = acknowledged.iter().find(|pair| !seen.contains(*pair)) {
            return Err(format!(
                "{}: the acknowledged write {}={} never came",
                w.name, missing.0, missing.1
            ));
        }
        match &reference {
            None => reference = Some((w.name.clone(), by_revision)),
            Some((name, other)) => {
                for (revision, e) in &by_revision {
                    if let Some(o) = other.get(revision)
                        && o != e
                    {
                        return Err(format!(
                            "at revision {revision}, {name} saw {}={:?} but {} saw {}={:?}",
                            o.key, o.value, w.name, e.key, e.value
                        ));
                    }
                }
            }
        }
    }
    Ok(format!(
        "{} watchers saw revisions {first}..={last} exactly once each ({events} events, {streams} \
         streams)",
        watching.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watching(name: &str, events: &[(i64, &str, &str)]) -> Watching {
        let log = WatchLog {
            events: events
                .iter()
                .map(|&(revision, key, value)| Seen {
                    revision,
                    key: key.into(),
                    value: Some(value.into()),
                })
                .collect(),
            streams: 1,
            canceled: None,
            notes: Default::default(),
        };
        Watching {
            name: name.into(),
            log: Arc::new(Mutex::new(log)),
        }
    }

    fn pairs(p: &[(&str, &str)]) -> HashSet<(String, String)> {
        p.iter().map(|&(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn the_checker_catches_gaps_repeats_strangers_and_disagreement() {
        let written = pairs(&[("a", "1"), ("b", "2"), ("a", "3")]);
        let acked = pairs(&[("a", "1"), ("a", "3")]);
        let good = [(2, "a", "1"), (3, "b", "2"), (4, "a", "3")];
        let check_one = |w: Vec<Watching>| check(&w, &written, &acked, 2, 4);
        assert!(check_one(vec![watching("x", &good), watching("y", &good)]).is_ok());
        // A gap.
        let e = check_one(vec![watching("x", &[good[0], good[2]])]).unwrap_err();
        assert!(e.contains("no event at revision 3"), "{e}");
        // The same revision twice.
        let e = check_one(vec![watching("x", &[good[0], good[1], good[1], good[2]])]).unwrap_err();
        assert!(e.contains("out of order, or twice"), "{e}");
        // A value nobody wrote.
        let e = check_one(vec![watching("x", &[good[0], (3, "b", "9"), good[2]])]).unwrap_err();
        assert!(e.contains("no client wrote"), "{e}");
        // Two nodes disagree on a revision.
        let other = [(2, "a", "1"), (3, "a", "3"), (4, "b", "2")];
        let e = check_one(vec![watching("x", &good), watching("y", &other)]).unwrap_err();
        assert!(e.contains("at revision 3"), "{e}");
    }
}
