//! etcd Watch requests as konsen's watcher specs, and history changes as
//! etcd's events.

use konsen_storage::{Change, KeyValue};

use super::key_value_to_etcd;
use crate::etcd::etcdserverpb as pb;
use crate::etcd::mvccpb;

/// What a client asked to watch, as etcd reads a `WatchCreateRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    /// Never empty: etcd watches `[0]`, the smallest key, for an empty key.
    pub key: Vec<u8>,
    /// Etcd's range rules: empty for one key, `[0]` for every key from `key`.
    pub range_end: Vec<u8>,
    /// The first revision to report; 0: from the next one on.
    pub start_revision: i64,
    pub progress_notify: bool,
    /// Filter out put events (etcd's NOPUT).
    pub no_put: bool,
    /// Filter out delete events (etcd's NODELETE).
    pub no_delete: bool,
    pub prev_kv: bool,
    /// 0: let the server choose.
    pub watch_id: i64,
    pub fragment: bool,
}

/// Reads a create request as etcd does: an empty key is `[0]`, and filter
/// values it does not know are ignored.
pub fn watch_spec_from_etcd(r: pb::WatchCreateRequest) -> WatchSpec {
    let mut spec = WatchSpec {
        key: if r.key.is_empty() { vec![0] } else { r.key },
        range_end: r.range_end,
        start_revision: r.start_revision,
        progress_notify: r.progress_notify,
        no_put: false,
        no_delete: false,
        prev_kv: r.prev_kv,
        watch_id: r.watch_id,
        fragment: r.fragment,
    };
    for filter in r.filters {
        match pb::watch_create_request::FilterType::try_from(filter) {
            Ok(pb::watch_create_request::FilterType::Noput) => spec.no_put = true,
            Ok(pb::watch_create_request::FilterType::Nodelete) => spec.no_delete = true,
            Err(_) => {}
        }
    }
    spec
}

/// A change as etcd's event: a put carries the new pair; a delete carries
/// the key and the revision of the delete, as etcd's tombstone does.
pub fn change_to_event(change: &Change, prev_kv: Option<KeyValue>) -> mvccpb::Event {
    let (kind, kv) = match &change.state {
        Some(kv) => (mvccpb::event::EventType::Put, key_value_to_etcd(kv.clone())),
        None => (
            mvccpb::event::EventType::Delete,
            mvccpb::KeyValue {
                key: change.key.clone(),
                mod_revision: change.revision,
                ..mvccpb::KeyValue::default()
            },
        ),
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(kv),
        prev_kv: prev_kv.map(key_value_to_etcd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_key_is_the_smallest_key_and_filters_are_read() {
        let spec = watch_spec_from_etcd(pb::WatchCreateRequest {
            filters: vec![1, 7],
            ..pb::WatchCreateRequest::default()
        });
        assert_eq!(spec.key, vec![0]);
        assert!(spec.no_delete && !spec.no_put);
    }

    #[test]
    fn a_delete_is_a_tombstone_at_its_revision() {
        let change = Change {
            key: b"k".to_vec(),
            revision: 7,
            state: None,
        };
        let event = change_to_event(&change, None);
        assert_eq!(event.r#type, mvccpb::event::EventType::Delete as i32);
        let kv = event.kv.unwrap();
        assert_eq!(
            (kv.key.as_slice(), kv.mod_revision, kv.version),
            (&b"k"[..], 7, 0)
        );
    }
}
