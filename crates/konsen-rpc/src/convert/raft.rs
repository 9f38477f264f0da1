//! Raft messages: `peer::Message` <-> [`konsen_core::Message`].
//!
//! The wire message has one oneof case per [`MessageBody`] variant, and
//! the same field names, so each arm below is a plain field copy.

use konsen_core::{
    Entry, EntryKind, Membership, Message, MessageBody, NodeId, RejectHint, SnapshotMeta,
};

use crate::ConvertError;
use crate::peer::{self, message::Body};

/// The core message as it goes on the wire.
pub fn message_to_wire(m: &Message) -> peer::Message {
    let body = match &m.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        } => Body::PreVote(peer::PreVote {
            last_index: *last_index,
            last_term: *last_term,
        }),
        MessageBody::PreVoteResponse { granted } => {
            Body::PreVoteResponse(peer::PreVoteResponse { granted: *granted })
        }
        MessageBody::Vote {
            last_index,
            last_term,
            transfer,
        } => Body::Vote(peer::Vote {
            last_index: *last_index,
            last_term: *last_term,
            transfer: *transfer,
        }),
        MessageBody::VoteResponse { granted } => {
            Body::VoteResponse(peer::VoteResponse { granted: *granted })
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => Body::Append(peer::Append {
            prev_index: *prev_index,
            prev_term: *prev_term,
            entries: entries.iter().map(entry_to_wire).collect(),
            commit: *commit,
        }),
        MessageBody::AppendResponse { index, reject } => {
            Body::AppendResponse(peer::AppendResponse {
                index: *index,
                reject: reject.map(|r| peer::RejectHint {
                    conflict_term: r.conflict_term,
                    conflict_index: r.conflict_index,
                }),
            })
        }
        MessageBody::Heartbeat { commit, read_seq } => Body::Heartbeat(peer::Heartbeat {
            commit: *commit,
            read_seq: *read_seq,
        }),
        MessageBody::HeartbeatResponse { read_seq } => {
            Body::HeartbeatResponse(peer::HeartbeatResponse {
                read_seq: *read_seq,
            })
        }
        MessageBody::ReadIndex { ctx } => Body::ReadIndex(peer::ReadIndex { ctx: *ctx }),
        MessageBody::ReadIndexResponse { ctx, index } => {
            Body::ReadIndexResponse(peer::ReadIndexResponse {
                ctx: *ctx,
                index: *index,
            })
        }
        MessageBody::TimeoutNow => Body::TimeoutNow(peer::TimeoutNow {}),
        MessageBody::InstallSnapshot { meta } => Body::InstallSnapshot(peer::InstallSnapshot {
            meta: Some(snapshot_meta_to_wire(meta)),
        }),
    };
    peer::Message {
        from: m.from,
        to: m.to,
        term: m.term,
        body: Some(body),
    }
}

/// A wire message as the core's. Fails on a missing body or a zero node id.
pub fn message_from_wire(m: peer::Message) -> Result<Message, ConvertError> {
    let from = node_id(m.from, "from")?;
    let to = node_id(m.to, "to")?;
    let body = match m.body.ok_or(ConvertError::Missing {
        message: "Message",
        field: "body",
    })? {
        Body::PreVote(b) => MessageBody::PreVote {
            last_index: b.last_index,
            last_term: b.last_term,
        },
        Body::PreVoteResponse(b) => MessageBody::PreVoteResponse { granted: b.granted },
        Body::Vote(b) => MessageBody::Vote {
            last_index: b.last_index,
            last_term: b.last_term,
            transfer: b.transfer,
        },
        Body::VoteResponse(b) => MessageBody::VoteResponse { granted: b.granted },
        Body::Append(b) => MessageBody::Append {
            prev_index: b.prev_index,
            prev_term: b.prev_term,
            entries: b
                .entries
                .into_iter()
                .map(entry_from_wire)
                .collect::<Result<_, _>>()?,
            commit: b.commit,
        },
        Body::AppendResponse(b) => MessageBody::AppendResponse {
            index: b.index,
            reject: b.reject.map(|r| RejectHint {
                conflict_term: r.conflict_term,
                conflict_index: r.conflict_index,
            }),
        },
        Body::Heartbeat(b) => MessageBody::Heartbeat {
            commit: b.commit,
            read_seq: b.read_seq,
        },
        Body::HeartbeatResponse(b) => MessageBody::HeartbeatResponse {
            read_seq: b.read_seq,
        },
        Body::ReadIndex(b) => MessageBody::ReadIndex { ctx: b.ctx },
        Body::ReadIndexResponse(b) => MessageBody::ReadIndexResponse {
            ctx: b.ctx,
            index: b.index,
        },
        Body::TimeoutNow(_) => MessageBody::TimeoutNow,
        Body::InstallSnapshot(b) => MessageBody::InstallSnapshot {
            meta: snapshot_meta_from_wire(b.meta.ok_or(ConvertError::Missing {
                message: "InstallSnapshot",
                field: "meta",
            })?)?,
        },
    };
    Ok(Message {
        from,
        to,
        term: m.term,
        body,
    })
}

/// A log entry as it goes on the wire.
pub fn entry_to_wire(e: &Entry) -> peer::Entry {
    let kind = match e.kind {
        EntryKind::Normal => peer::EntryKind::Normal,
        EntryKind::Membership => peer::EntryKind::Membership,
    };
    peer::Entry {
        index: e.index,
        term: e.term,
        kind: kind as i32,
        data: e.data.clone(),
    }
}

/// A wire entry as the core's. Fails on an unknown or unspecified kind.
pub fn entry_from_wire(e: peer::Entry) -> Result<Entry, ConvertError> {
    let kind = match peer::EntryKind::try_from(e.kind) {
        Ok(peer::EntryKind::Normal) => EntryKind::Normal,
        Ok(peer::EntryKind::Membership) => EntryKind::Membership,
        Ok(peer::EntryKind::Unspecified) | Err(_) => {
            return Err(ConvertError::UnknownEnum {
                message: "Entry",
                field: "kind",
                value: e.kind,
            });
        }
    };
    Ok(Entry {
        index: e.index,
        term: e.term,
        kind,
        data: e.data,
    })
}

/// A snapshot's description as it goes on the wire.
pub fn snapshot_meta_to_wire(meta: &SnapshotMeta) -> peer::SnapshotMeta {
    peer::SnapshotMeta {
        index: meta.index,
        term: meta.term,
        voters: meta.membership.voters.iter().copied().collect(),
        learners: meta.membership.learners.iter().copied().collect(),
    }
}

/// A wire snapshot description as the core's. Fails on node id 0 or an
/// empty voter set.
pub fn snapshot_meta_from_wire(meta: peer::SnapshotMeta) -> Result<SnapshotMeta, ConvertError> {
    for &id in meta.voters.iter().chain(&meta.learners) {
        if id == 0 {
            return Err(ConvertError::ZeroNodeId {
                message: "SnapshotMeta",
                field: "voters/learners",
            });
        }
    }
    if meta.voters.is_empty() {
        return Err(ConvertError::Invalid {
            message: "SnapshotMeta",
            reason: "the membership has no voters".into(),
        });
    }
    Ok(SnapshotMeta {
        index: meta.index,
        term: meta.term,
        membership: Membership {
            voters: meta.voters.into_iter().collect(),
            learners: meta.learners.into_iter().collect(),
        },
    })
}

fn node_id(id: u64, field: &'static str) -> Result<NodeId, ConvertError> {
    if id == 0 {
        return Err(ConvertError::ZeroNodeId {
            message: "Message",
            field,
        });
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn any_entry() -> impl Strategy<Value = Entry> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(|(index, term, membership, data)| Entry {
                index,
                term,
                kind: if membership {
                    EntryKind::Membership
                } else {
                    EntryKind::Normal
                },
                data: Bytes::from(data),
            })
    }

    fn any_body() -> impl Strategy<Value = MessageBody> {
        let u = any::<u64>;
        prop_oneof![
            (u(), u()).prop_map(|(last_index, last_term)| MessageBody::PreVote {
                last_index,
                last_term
            }),
            any::<bool>().prop_map(|granted| MessageBody::PreVoteResponse { granted }),
            (u(), u(), any::<bool>()).prop_map(|(last_index, last_term, transfer)| {
                MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer,
                }
            }),
            any::<bool>().prop_map(|granted| MessageBody::VoteResponse { granted }),
            (u(), u(), proptest::collection::vec(any_entry(), 0..4), u()).prop_map(
                |(prev_index, prev_term, entries, commit)| MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit
                }
            ),
            (u(), proptest::option::of((proptest::option::of(u()), u()))).prop_map(
                |(index, reject)| {
                    MessageBody::AppendResponse {
                        index,
                        reject: reject.map(|(conflict_term, conflict_index)| RejectHint {
                            conflict_term,
                            conflict_index,
                        }),
                    }
                }
            ),
            (u(), u()).prop_map(|(commit, read_seq)| MessageBody::Heartbeat { commit, read_seq }),
            u().prop_map(|read_seq| MessageBody::HeartbeatResponse { read_seq }),
            u().prop_map(|ctx| MessageBody::ReadIndex { ctx }),
            (u(), proptest::option::of(u()))
                .prop_map(|(ctx, index)| MessageBody::ReadIndexResponse { ctx, index }),
            Just(MessageBody::TimeoutNow),
            (
                u(),
                u(),
                proptest::collection::btree_set(1..u64::MAX, 1..4),
                proptest::collection::btree_set(1..u64::MAX, 0..3)
            )
                .prop_map(|(index, term, voters, learners)| {
                    MessageBody::InstallSnapshot {
                        meta: SnapshotMeta {
                            index,
                            term,
                            membership: Membership { voters, learners },
                        },
                    }
                }),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip(from in 1..u64::MAX, to in 1..u64::MAX, term in any::<u64>(), body in any_body()) {
            let m = Message { from, to, term, body };
            prop_assert_eq!(message_from_wire(message_to_wire(&m)), Ok(m));
        }
    }

    #[test]
    fn missing_body_is_an_error() {
        let m = peer::Message {
            from: 1,
            to: 2,
            term: 1,
            body: None,
        };
        assert!(matches!(
            message_from_wire(m),
            Err(ConvertError::Missing { field: "body", .. })
        ));
    }

    #[test]
    fn zero_node_id_is_an_error() {
        let m = peer::Message {
            from: 0,
            to: 2,
            term: 1,
            body: Some(Body::TimeoutNow(peer::TimeoutNow {})),
        };
        assert!(matches!(
            message_from_wire(m),
            Err(ConvertError::ZeroNodeId { field: "from", .. })
        ));
    }

    #[test]
    fn unknown_entry_kind_is_an_error() {
        for kind in [0, 3, -1] {
            let e = peer::Entry {
                index: 1,
                term: 1,
                kind,
                data: Bytes::new(),
            };
            assert!(matches!(
                entry_from_wire(e),
                Err(ConvertError::UnknownEnum { .. })
            ));
        }
    }
}
