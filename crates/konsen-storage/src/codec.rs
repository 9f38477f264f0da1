//! The binary formats of every record the store writes to disk, and the
//! byte reader they are parsed with.
//!
//! Each record starts with a format version byte, so that a later release
//! can change a format and still read the old one. Integers are big-endian
//! and fixed-width; byte strings carry a `u32` length. Decoding checks every
//! length and rejects trailing bytes: bad input is a [`DecodeError`], never
//! a panic or a silently wrong value.

use bytes::Bytes;
use konsen_core::{Entry, EntryKind, HardState, Index, Term};

use crate::error::DecodeError;
use crate::kv::KeyValue;
use crate::store::NodeIdentity;

/// The version byte of every record format below.
const FORMAT_V1: u8 = 1;

const KIND_NORMAL: u8 = 0;
const KIND_MEMBERSHIP: u8 = 1;

/// Reads fixed-width fields off the front of a byte slice.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    what: &'static str,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, which should hold one `what` (named in errors).
    pub(crate) fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Reader { what, buf }
    }

    /// Reads the version byte and checks that it is one this build knows.
    pub(crate) fn version(&mut self) -> Result<u8, DecodeError> {
        let version = self.u8()?;
        if version != FORMAT_V1 {
            return Err(DecodeError::UnknownVersion {
                what: self.what,
                version,
            });
        }
        Ok(version)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                what: self.what,
                needed: n,
                remaining: self.buf.len(),
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes(bytes.try_into().expect("took 4 bytes")))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let bytes = self.take(8)?;
        Ok(u64::from_be_bytes(bytes.try_into().expect("took 8 bytes")))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        let bytes = self.take(8)?;
        Ok(i64::from_be_bytes(bytes.try_into().expect("took 8 bytes")))
    }

    /// A byte string prefixed by its `u32` length.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// A boolean stored as one byte, 0 or 1.
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.invalid(field, other.into())),
        }
    }

    /// The error for a field whose value is out of its domain.
    pub(crate) fn invalid(&self, field: &'static str, value: u64) -> DecodeError {
        DecodeError::Invalid {
            what: self.what,
            field,
            value,
        }
    }

    /// Whether the whole input was consumed.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Checks that the whole input was consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing {
                what: self.what,
                count: self.buf.len(),
            })
        }
    }
}

/// Appends a byte string with its `u32` length. Lengths are bounded by the
/// request limit far below 4 GiB; a longer one is a bug upstream.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("byte string longer than u32::MAX");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The key of log entry `index`: big-endian, so RocksDB's byte order is
/// index order.
pub(crate) fn log_key(index: Index) -> [u8; 8] {
    index.to_be_bytes()
}

pub(crate) fn decode_log_key(key: &[u8]) -> Result<Index, DecodeError> {
    let mut r = Reader::new("log key", key);
    let index = r.u64()?;
    r.finish()?;
    Ok(index)
}

/// Log entry: version, kind, term, data. The index is the key.
pub(crate) fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 1 + 8 + 4 + entry.data.len());
    out.push(FORMAT_V1);
    out.push(match entry.kind {
        EntryKind::Normal => KIND_NORMAL,
        EntryKind::Membership => KIND_MEMBERSHIP,
    });
    out.extend_from_slice(&entry.term.to_be_bytes());
    put_bytes(&mut out, &entry.data);
    out
}

pub(crate) fn decode_entry(index: Index, value: &[u8]) -> Result<Entry, DecodeError> {
    let mut r = Reader::new("log entry", value);
    r.version()?;
    let kind = match r.u8()? {
        KIND_NORMAL => EntryKind::Normal,
        KIND_MEMBERSHIP => EntryKind::Membership,
        other => return Err(r.invalid("kind", other.into())),
    };
    let term = r.u64()?;
    let data = Bytes::copy_from_slice(r.bytes()?);
    r.finish()?;
    Ok(Entry {
        index,
        term,
        kind,
        data,
    })
}

/// Hard state: version, term, vote flag, vote, commit.
pub(crate) fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + 1 + 8 + 8);
    out.push(FORMAT_V1);
    out.extend_from_slice(&hs.term.to_be_bytes());
    out.push(u8::from(hs.vote.is_some()));
    out.extend_from_slice(&hs.vote.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&hs.commit.to_be_bytes());
    out
}

pub(crate) fn decode_hard_state(value: &[u8]) -> Result<HardState, DecodeError> {
    let mut r = Reader::new("hard state", value);
    r.version()?;
    let term = r.u64()?;
    let voted = r.bool("vote flag")?;
    let vote = r.u64()?;
    let commit = r.u64()?;
    r.finish()?;
    Ok(HardState {
        term,
        vote: voted.then_some(vote),
        commit,
    })
}

/// Node identity: version, cluster id, node id.
pub(crate) fn encode_identity(id: &NodeIdentity) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + 8);
    out.push(FORMAT_V1);
    out.extend_from_slice(&id.cluster_id.to_be_bytes());
    out.extend_from_slice(&id.node_id.to_be_bytes());
    out
}

pub(crate) fn decode_identity(value: &[u8]) -> Result<NodeIdentity, DecodeError> {
    let mut r = Reader::new("node identity", value);
    r.version()?;
    let cluster_id = r.u64()?;
    let node_id = r.u64()?;
    r.finish()?;
    Ok(NodeIdentity {
        cluster_id,
        node_id,
    })
}

/// The purge point: version, index, term.
pub(crate) fn encode_purged(index: Index, term: Term) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + 8);
    out.push(FORMAT_V1);
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&term.to_be_bytes());
    out
}

pub(crate) fn decode_purged(value: &[u8]) -> Result<(Index, Term), DecodeError> {
    let mut r = Reader::new("purge point", value);
    r.version()?;
    let index = r.u64()?;
    let term = r.u64()?;
    r.finish()?;
    Ok((index, term))
}

/// The state machine's position: version, applied index, revision.
pub(crate) fn encode_kv_state(applied: Index, revision: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + 8);
    out.push(FORMAT_V1);
    out.extend_from_slice(&applied.to_be_bytes());
    out.extend_from_slice(&revision.to_be_bytes());
    out
}

pub(crate) fn decode_kv_state(value: &[u8]) -> Result<(Index, i64), DecodeError> {
    let mut r = Reader::new("state machine position", value);
    r.version()?;
    let applied = r.u64()?;
    let revision = r.i64()?;
    r.finish()?;
    Ok((applied, revision))
}

/// A revision record (the compacted revision): version, revision.
pub(crate) fn encode_revision(revision: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8);
    out.push(FORMAT_V1);
    out.extend_from_slice(&revision.to_be_bytes());
    out
}

pub(crate) fn decode_revision(value: &[u8]) -> Result<i64, DecodeError> {
    let mut r = Reader::new("revision record", value);
    r.version()?;
    let revision = r.i64()?;
    r.finish()?;
    Ok(revision)
}

/// Which key-value column family is in use: version, 0 (`kv`) or 1
/// (`kv_alt`).
pub(crate) fn encode_kv_cf(cf: &str) -> Vec<u8> {
    vec![FORMAT_V1, u8::from(cf == crate::db::CF_KV_ALT)]
}

pub(crate) fn decode_kv_cf(value: &[u8]) -> Result<&'static str, DecodeError> {
    let mut r = Reader::new("key-value column family", value);
    r.version()?;
    let cf = match r.u8()? {
        0 => crate::db::CF_KV,
        1 => crate::db::CF_KV_ALT,
        other => return Err(r.invalid("column family", u64::from(other))),
    };
    r.finish()?;
    Ok(cf)
}

/// A key's record (the key itself is the RocksDB key): version,
/// create_revision, mod_revision, version, lease, value.
pub(crate) fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 4 * 8 + 4 + kv.value.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&kv.create_revision.to_be_bytes());
    out.extend_from_slice(&kv.mod_revision.to_be_bytes());
    out.extend_from_slice(&kv.version.to_be_bytes());
    out.extend_from_slice(&kv.lease.to_be_bytes());
    put_bytes(&mut out, &kv.value);
    out
}

/// Decodes a key's record; with `keys_only` the value is skipped (left
/// empty) but still checked for length.
pub(crate) fn decode_kv(
    key: &[u8],
    value: &[u8],
    keys_only: bool,
) -> Result<KeyValue, DecodeError> {
    let mut r = Reader::new("key-value record", value);
    r.version()?;
    let create_revision = r.i64()?;
    let mod_revision = r.i64()?;
    let version = r.i64()?;
    let lease = r.i64()?;
    let stored = r.bytes()?;
    r.finish()?;
    Ok(KeyValue {
        key: key.to_vec(),
        value: if keys_only {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(stored)
        },
        create_revision,
        mod_revision,
        version,
        lease,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, term: Term, kind: EntryKind, data: &'static [u8]) -> Entry {
        Entry {
            index,
            term,
            kind,
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn records_round_trip() {
        for e in [
            entry(1, 1, EntryKind::Normal, b""),
            entry(7, 3, EntryKind::Membership, b"voters"),
            entry(u64::MAX, u64::MAX, EntryKind::Normal, b"\x00\xff"),
        ] {
            assert_eq!(decode_entry(e.index, &encode_entry(&e)), Ok(e));
        }
        for hs in [
            HardState::default(),
            HardState {
                term: 5,
                vote: Some(2),
                commit: 9,
            },
        ] {
            assert_eq!(decode_hard_state(&encode_hard_state(&hs)), Ok(hs));
        }
        let id = NodeIdentity {
            cluster_id: 0xfeed,
            node_id: 3,
        };
        assert_eq!(decode_identity(&encode_identity(&id)), Ok(id));
        assert_eq!(decode_purged(&encode_purged(10, 4)), Ok((10, 4)));
        assert_eq!(decode_kv_state(&encode_kv_state(10, 7)), Ok((10, 7)));
        assert_eq!(decode_log_key(&log_key(42)), Ok(42));
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: Bytes::from_static(b"v"),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            lease: 0,
        };
        assert_eq!(decode_kv(b"k", &encode_kv(&kv), false), Ok(kv.clone()));
        let key_only = decode_kv(b"k", &encode_kv(&kv), true).unwrap();
        assert!(key_only.value.is_empty());
        assert_eq!(key_only.mod_revision, 3);
    }

    #[test]
    fn every_prefix_and_extension_of_a_record_is_rejected() {
        let encoded = encode_entry(&entry(3, 2, EntryKind::Normal, b"payload"));
        for len in 0..encoded.len() {
            assert!(
                matches!(
                    decode_entry(3, &encoded[..len]),
                    Err(DecodeError::Truncated { .. })
                ),
                "prefix of {len} bytes decoded"
            );
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(
            decode_entry(3, &longer),
            Err(DecodeError::Trailing {
                what: "log entry",
                count: 1
            })
        );
    }

    #[test]
    fn unknown_versions_and_values_are_rejected() {
        let mut encoded = encode_entry(&entry(1, 1, EntryKind::Normal, b""));
        encoded[0] = 9;
        assert_eq!(
            decode_entry(1, &encoded),
            Err(DecodeError::UnknownVersion {
                what: "log entry",
                version: 9
            })
        );
        encoded[0] = FORMAT_V1;
        encoded[1] = 7;
        assert!(matches!(
            decode_entry(1, &encoded),
            Err(DecodeError::Invalid { field: "kind", .. })
        ));
        let mut hs = encode_hard_state(&HardState::default());
        hs[9] = 2;
        assert!(matches!(
            decode_hard_state(&hs),
            Err(DecodeError::Invalid {
                field: "vote flag",
                ..
            })
        ));
        assert!(decode_log_key(b"short").is_err());
    }
}
