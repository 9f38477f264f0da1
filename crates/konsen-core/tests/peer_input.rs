//! Bad input from a peer is refused with an error and leaves the node
//! working; it never panics.

use bytes::Bytes;
use konsen_core::{
    Config, Entry, EntryKind, Membership, Message, MessageBody, RawNode, RestoredState, Role,
    StepError,
};

fn node(id: u64) -> RawNode {
    let restored = RestoredState {
        membership: Membership::with_voters([1, 2, 3]),
        ..Default::default()
    };
    RawNode::new(Config::new(id), restored).expect("valid")
}

fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::from_static(b"x"),
    }
}

fn heartbeat() -> MessageBody {
    MessageBody::Heartbeat {
        commit: 0,
        read_seq: 0,
    }
}

#[test]
fn misaddressed_and_unknown_senders_are_refused() {
    let mut n = node(1);
    assert!(matches!(
        n.step(msg(2, 3, 1, heartbeat())),
        Err(StepError::WrongRecipient { .. })
    ));
    assert!(matches!(
        n.step(msg(9, 1, 1, heartbeat())),
        Err(StepError::UnknownSender(9))
    ));
    assert!(matches!(
        n.step(msg(1, 1, 1, heartbeat())),
        Err(StepError::FromSelf { .. })
    ));
    assert_eq!(n.term(), 0, "refused messages change nothing");
}

#[test]
fn absurd_terms_are_refused() {
    let mut n = node(1);
    for term in [0, u64::MAX] {
        assert!(matches!(
            n.step(msg(2, 1, term, heartbeat())),
            Err(StepError::Malformed { .. })
        ));
    }
    assert_eq!(n.term(), 0);
}

#[test]
fn malformed_appends_are_refused() {
    let mut n = node(1);
    let gap = MessageBody::Append {
        prev_index: 0,
        prev_term: 0,
        entries: vec![entry(1, 1), entry(3, 1)],
        commit: 0,
    };
    assert!(matches!(
        n.step(msg(2, 1, 1, gap)),
        Err(StepError::Malformed { .. })
    ));
    let future_term = MessageBody::Append {
        prev_index: 0,
        prev_term: 0,
        entries: vec![entry(1, 5)],
        commit: 0,
    };
    assert!(matches!(
        n.step(msg(2, 1, 1, future_term)),
        Err(StepError::Malformed { .. })
    ));
    assert!(n.log().last_index() == 0, "nothing was appended");
}

#[test]
fn a_second_leader_of_the_same_term_is_refused_not_followed() {
    let mut n = node(1);
    n.campaign();
    // Win the pre-vote and the vote.
    for from in [2, 3] {
        n.step(msg(
            from,
            1,
            1,
            MessageBody::PreVoteResponse { granted: true },
        ))
        .ok();
    }
    for from in [2, 3] {
        n.step(msg(from, 1, 1, MessageBody::VoteResponse { granted: true }))
            .ok();
    }
    assert_eq!(n.role(), Role::Leader);
    let res = n.step(msg(2, 1, 1, heartbeat()));
    assert!(matches!(res, Err(StepError::Malformed { .. })), "{res:?}");
    assert_eq!(n.role(), Role::Leader);
    // An acknowledgement beyond the leader's log is refused too.
    let ack = MessageBody::AppendResponse {
        index: 99,
        reject: None,
    };
    assert!(matches!(
        n.step(msg(2, 1, 1, ack)),
        Err(StepError::Malformed { .. })
    ));
    assert!(n.propose(Bytes::from_static(b"still works")).is_ok());
}
