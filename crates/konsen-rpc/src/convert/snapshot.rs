//! Snapshot chunks (`RaftPeer.InstallSnapshot`) <-> konsen-storage's
//! snapshot header and record data, with a checksum per chunk.

use konsen_core::{NodeId, SnapshotMeta, Term};
use konsen_storage::SnapshotHeader;

use super::{snapshot_meta_from_wire, snapshot_meta_to_wire};
use crate::ConvertError;
use crate::peer;

/// One chunk, checked: its data matches its checksum and its header
/// agrees with its description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub cluster_id: u64,
    pub from: NodeId,
    pub to: NodeId,
    /// The sending leader's term.
    pub term: Term,
    pub meta: SnapshotMeta,
    pub header: SnapshotHeader,
    pub seq: u64,
    pub data: bytes::Bytes,
    pub last: bool,
}

pub fn snapshot_chunk_to_wire(c: SnapshotChunk) -> peer::SnapshotChunk {
    peer::SnapshotChunk {
        cluster_id: c.cluster_id,
        from: c.from,
        to: c.to,
        term: c.term,
        meta: Some(snapshot_meta_to_wire(&c.meta)),
        revision: c.header.revision,
        seq: c.seq,
        crc32: crc32fast::hash(&c.data),
        data: c.data,
        last: c.last,
    }
}

pub fn snapshot_chunk_from_wire(c: peer::SnapshotChunk) -> Result<SnapshotChunk, ConvertError> {
    let invalid = |reason: String| ConvertError::Invalid {
        message: "SnapshotChunk",
        reason,
    };
    if c.from == 0 || c.to == 0 {
        return Err(ConvertError::ZeroNodeId {
            message: "SnapshotChunk",
            field: "from/to",
        });
    }
    let meta = snapshot_meta_from_wire(c.meta.ok_or(ConvertError::Missing {
        message: "SnapshotChunk",
        field: "meta",
    })?)?;
    if meta.index == 0 || meta.term == 0 || meta.term > c.term {
        return Err(invalid(format!(
            "snapshot {}@{} out of range for term {}",
            meta.index, meta.term, c.term
        )));
    }
    let crc = crc32fast::hash(&c.data);
    if crc != c.crc32 {
        return Err(invalid(format!(
            "chunk {} checksum mismatch: {crc:#010x}, expected {:#010x}",
            c.seq, c.crc32
        )));
    }
    if c.last && !c.data.is_empty() {
        return Err(invalid("the last chunk carries data".into()));
    }
    Ok(SnapshotChunk {
        cluster_id: c.cluster_id,
        from: c.from,
        to: c.to,
        term: c.term,
        header: SnapshotHeader {
            index: meta.index,
            term: meta.term,
            revision: c.revision,
        },
        meta,
        seq: c.seq,
        data: c.data,
        last: c.last,
    })
}

#[cfg(test)]
mod tests {
    use konsen_core::Membership;

    use super::*;

    fn chunk(data: &[u8]) -> SnapshotChunk {
        SnapshotChunk {
            cluster_id: 7,
            from: 1,
            to: 2,
            term: 5,
            meta: SnapshotMeta {
                index: 100,
                term: 4,
                membership: Membership::with_voters([1, 2, 3]),
            },
            header: SnapshotHeader {
                index: 100,
                term: 4,
                revision: 42,
            },
            seq: 3,
            data: bytes::Bytes::copy_from_slice(data),
            last: false,
        }
    }

    #[test]
    fn a_chunk_round_trips() {
        let c = chunk(b"records");
        assert_eq!(
            snapshot_chunk_from_wire(snapshot_chunk_to_wire(c.clone())),
            Ok(c)
        );
    }

    #[test]
    fn damaged_or_inconsistent_chunks_are_refused() {
        let mut wire = snapshot_chunk_to_wire(chunk(b"records"));
        let mut damaged = wire.data.to_vec();
        damaged[0] ^= 1;
        wire.data = damaged.into();
        let err = snapshot_chunk_from_wire(wire).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");

        let mut wire = snapshot_chunk_to_wire(chunk(b""));
        wire.meta = None;
        assert!(snapshot_chunk_from_wire(wire).is_err());

        let mut wire = snapshot_chunk_to_wire(chunk(b""));
        wire.term = 3; // below the snapshot's own term
        assert!(snapshot_chunk_from_wire(wire).is_err());

        let mut wire = snapshot_chunk_to_wire(chunk(b"x"));
        wire.last = true;
        assert!(snapshot_chunk_from_wire(wire).is_err());
    }
}
