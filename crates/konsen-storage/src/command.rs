//! [`Command`]: what a log entry asks the key-value state machine to do, and
//! its binary format.
//!
//! The server encodes a client's write as a `Command`, proposes the bytes,
//! and every replica decodes and applies them. The format is
//! `[version][kind tag][fields...]`: the version byte lets the format change
//! without breaking old logs, and the tag leaves room for more kinds.
//! Decoding never panics: replicas must agree on what a payload means,
//! including that a bad one means nothing. A txn nests; its decoding stops
//! at [`TXN_DEPTH_MAX`] levels, so no payload can exhaust the stack.

use bytes::Bytes;

use crate::codec::{Reader, put_bytes};
use crate::error::{DecodeError, RequestError};
use crate::lease::LEASE_TTL_MAX;
use crate::options::StorageOptions;
use crate::range::{RangeRequest, SortOrder, SortTarget};
use crate::txn::{Compare, CompareResult, CompareTarget, TXN_DEPTH_MAX, Txn, TxnOp};

const COMMAND_V1: u8 = 1;
const TAG_PUT: u8 = 1;
const TAG_DELETE_RANGE: u8 = 2;
const TAG_TXN: u8 = 3;
const TAG_COMPACT: u8 = 4;
const TAG_LEASE_GRANT: u8 = 5;
const TAG_LEASE_REVOKE: u8 = 6;

/// Operation tags inside a txn.
const OP_RANGE: u8 = 1;
const OP_PUT: u8 = 2;
const OP_DELETE_RANGE: u8 = 3;
const OP_TXN: u8 = 4;
const RANGE_KEYS_ONLY: u8 = 1 << 0;
const RANGE_COUNT_ONLY: u8 = 1 << 1;
const RANGE_FLAGS: u8 = RANGE_KEYS_ONLY | RANGE_COUNT_ONLY;

const PUT_PREV_KV: u8 = 1 << 0;
const PUT_IGNORE_VALUE: u8 = 1 << 1;
const PUT_IGNORE_LEASE: u8 = 1 << 2;
const PUT_FLAGS: u8 = PUT_PREV_KV | PUT_IGNORE_VALUE | PUT_IGNORE_LEASE;
const DELETE_PREV_KV: u8 = 1 << 0;
const DELETE_FLAGS: u8 = DELETE_PREV_KV;

/// A mutation of the key-value store, with etcd's meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Sets `key` to `value` (etcd `PutRequest`).
    Put {
        key: Vec<u8>,
        value: Bytes,
        /// The lease the key is attached to; 0 for none.
        lease: i64,
        /// Return the key's previous state.
        prev_kv: bool,
        /// Keep the current value (`value` must be empty; the key must exist).
        ignore_value: bool,
        /// Keep the current lease (`lease` must be 0; the key must exist).
        ignore_lease: bool,
    },
    /// Deletes the keys in `[key, range_end)`, with the range conventions of
    /// [`crate::RangeRequest`] (etcd `DeleteRangeRequest`).
    DeleteRange {
        key: Vec<u8>,
        range_end: Vec<u8>,
        /// Return the deleted keys' last states.
        prev_kv: bool,
    },
    /// An etcd transaction, applied atomically at one revision.
    Txn(Txn),
    /// Drops the history below `revision` (etcd `CompactionRequest`).
    Compact { revision: i64 },
    /// Creates lease `id` with a TTL of `ttl` seconds (etcd
    /// `LeaseGrantRequest`; the proposer picked the id if the client did
    /// not, and raised the TTL to the cluster's minimum).
    LeaseGrant { id: i64, ttl: i64 },
    /// Deletes lease `id` and every key attached to it, in one revision
    /// (etcd `LeaseRevokeRequest`; also how the leader expires a lease).
    LeaseRevoke { id: i64 },
}

impl Command {
    /// A plain put: no lease, no previous value returned.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Bytes>) -> Self {
        Command::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        }
    }

    /// A plain delete of `[key, range_end)`, no previous values returned.
    pub fn delete_range(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        Command::DeleteRange {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: false,
        }
    }

    /// Checks the command before it is proposed: a key is given, its size
    /// is within [`StorageOptions::request_bytes_max`], and the `ignore_*`
    /// flags are used as etcd allows. Apply does not re-check the size (it
    /// depends on local settings, and replicas must decide alike).
    pub fn validate(&self, options: &StorageOptions) -> Result<(), RequestError> {
        let size = match self {
            Command::Put {
                key,
                value,
                lease,
                ignore_value,
                ignore_lease,
                ..
            } => {
                if key.is_empty() {
                    return Err(RequestError::EmptyKey);
                }
                if *ignore_value && !value.is_empty() {
                    return Err(RequestError::ValueProvided);
                }
                if *ignore_lease && *lease != 0 {
                    return Err(RequestError::LeaseProvided);
                }
                key.len() + value.len()
            }
            Command::DeleteRange { key, range_end, .. } => {
                if key.is_empty() {
                    return Err(RequestError::EmptyKey);
                }
                key.len() + range_end.len()
            }
            Command::Txn(txn) => txn.validate(options)?,
            Command::Compact { revision } => {
                if *revision < 0 {
                    return Err(RequestError::NegativeRevision(*revision));
                }
                0
            }
            Command::LeaseGrant { id, ttl } => {
                check_lease_grant(*id, *ttl)?;
                0
            }
            Command::LeaseRevoke { id } => {
                if *id <= 0 {
                    return Err(RequestError::LeaseNotFound);
                }
                0
            }
        };
        if size > options.request_bytes_max {
            return Err(RequestError::TooLarge {
                size,
                max: options.request_bytes_max,
            });
        }
        Ok(())
    }

    /// The bytes to propose.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        out.push(COMMAND_V1);
        match self {
            Command::Put {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            } => {
                out.reserve(1 + 1 + 8 + 8 + key.len() + value.len());
                out.push(TAG_PUT);
                let mut flags = 0;
                for (set, bit) in [
                    (*prev_kv, PUT_PREV_KV),
                    (*ignore_value, PUT_IGNORE_VALUE),
                    (*ignore_lease, PUT_IGNORE_LEASE),
                ] {
                    if set {
                        flags |= bit;
                    }
                }
                out.push(flags);
                out.extend_from_slice(&lease.to_be_bytes());
                put_bytes(&mut out, key);
                put_bytes(&mut out, value);
            }
            Command::DeleteRange {
                key,
                range_end,
                prev_kv,
            } => {
                out.reserve(1 + 1 + 8 + key.len() + range_end.len());
                out.push(TAG_DELETE_RANGE);
                out.push(if *prev_kv { DELETE_PREV_KV } else { 0 });
                put_bytes(&mut out, key);
                put_bytes(&mut out, range_end);
            }
            Command::Txn(txn) => {
                out.push(TAG_TXN);
                encode_txn(&mut out, txn);
            }
            Command::Compact { revision } => {
                out.push(TAG_COMPACT);
                out.extend_from_slice(&revision.to_be_bytes());
            }
            Command::LeaseGrant { id, ttl } => {
                out.push(TAG_LEASE_GRANT);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&ttl.to_be_bytes());
            }
            Command::LeaseRevoke { id } => {
                out.push(TAG_LEASE_REVOKE);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        Bytes::from(out)
    }

    /// Whether applying the payload `data` may take long (a compaction
    /// scans the history), so the driver runs it off the runtime thread.
    pub fn is_heavy(data: &[u8]) -> bool {
        data.len() >= 2 && data[0] == COMMAND_V1 && data[1] == TAG_COMPACT
    }

    /// Parses a proposed payload. Unknown versions, tags and flag bits are
    /// errors, as are short and over-long inputs. A put's value shares
    /// `data`'s buffer (the log entry's): applying it copies it only into
    /// the RocksDB batch.
    pub fn decode(data: &Bytes) -> Result<Command, DecodeError> {
        let mut r = Reader::new("command", data);
        r.version()?;
        let command = match r.u8()? {
            TAG_PUT => {
                let flags = r.u8()?;
                if flags & !PUT_FLAGS != 0 {
                    return Err(r.invalid("put flags", flags.into()));
                }
                let lease = r.i64()?;
                let key = r.bytes()?.to_vec();
                let value = data.slice_ref(r.bytes()?);
                Command::Put {
                    key,
                    value,
                    lease,
                    prev_kv: flags & PUT_PREV_KV != 0,
                    ignore_value: flags & PUT_IGNORE_VALUE != 0,
                    ignore_lease: flags & PUT_IGNORE_LEASE != 0,
                }
            }
            TAG_DELETE_RANGE => {
                let flags = r.u8()?;
                if flags & !DELETE_FLAGS != 0 {
                    return Err(r.invalid("delete flags", flags.into()));
                }
                let key = r.bytes()?.to_vec();
                let range_end = r.bytes()?.to_vec();
                Command::DeleteRange {
                    key,
                    range_end,
                    prev_kv: flags & DELETE_PREV_KV != 0,
                }
            }
            TAG_TXN => Command::Txn(decode_txn(&mut r, data, 1)?),
            TAG_COMPACT => Command::Compact { revision: r.i64()? },
            TAG_LEASE_GRANT => Command::LeaseGrant {
                id: r.i64()?,
                ttl: r.i64()?,
            },
            TAG_LEASE_REVOKE => Command::LeaseRevoke { id: r.i64()? },
            other => return Err(r.invalid("kind tag", other.into())),
        };
        r.finish()?;
        Ok(command)
    }
}

/// The rules for a lease grant, checked before it is proposed and again
/// when it is applied: a positive id, a TTL from 1 to [`LEASE_TTL_MAX`].
pub(crate) fn check_lease_grant(id: i64, ttl: i64) -> Result<(), RequestError> {
    if id <= 0 {
        return Err(RequestError::LeaseIdNotPositive(id));
    }
    if ttl <= 0 {
        return Err(RequestError::LeaseTtlNotPositive(ttl));
    }
    if ttl > LEASE_TTL_MAX {
        return Err(RequestError::LeaseTtlTooLarge {
            ttl,
            max: LEASE_TTL_MAX,
        });
    }
    Ok(())
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(
        &u32::try_from(n)
            .expect("txn list longer than u32::MAX")
            .to_be_bytes(),
    );
}

fn encode_txn(out: &mut Vec<u8>, txn: &Txn) {
    put_count(out, txn.compare.len());
    for c in &txn.compare {
        put_bytes(out, &c.key);
        put_bytes(out, &c.range_end);
        out.push(match c.result {
            CompareResult::Equal => 0,
            CompareResult::Greater => 1,
            CompareResult::Less => 2,
            CompareResult::NotEqual => 3,
        });
        match &c.target {
            CompareTarget::Version(v) => {
                out.push(0);
                out.extend_from_slice(&v.to_be_bytes());
            }
            CompareTarget::Create(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_be_bytes());
            }
            CompareTarget::Mod(v) => {
                out.push(2);
                out.extend_from_slice(&v.to_be_bytes());
            }
            CompareTarget::Value(v) => {
                out.push(3);
                put_bytes(out, v);
            }
            CompareTarget::Lease(v) => {
                out.push(4);
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    for ops in [&txn.success, &txn.failure] {
        put_count(out, ops.len());
        for op in ops {
            encode_op(out, op);
        }
    }
}

fn encode_op(out: &mut Vec<u8>, op: &TxnOp) {
    match op {
        TxnOp::Range(r) => {
            out.push(OP_RANGE);
            put_bytes(out, &r.key);
            put_bytes(out, &r.range_end);
            out.extend_from_slice(&r.limit.to_be_bytes());
            out.extend_from_slice(&r.revision.to_be_bytes());
            let mut flags = 0;
            if r.keys_only {
                flags |= RANGE_KEYS_ONLY;
            }
            if r.count_only {
                flags |= RANGE_COUNT_ONLY;
            }
            out.push(flags);
            out.push(match r.sort_order {
                SortOrder::None => 0,
                SortOrder::Ascend => 1,
                SortOrder::Descend => 2,
            });
            out.push(match r.sort_target {
                SortTarget::Key => 0,
                SortTarget::Version => 1,
                SortTarget::Create => 2,
                SortTarget::Mod => 3,
                SortTarget::Value => 4,
            });
            for v in [
                r.min_mod_revision,
                r.max_mod_revision,
                r.min_create_revision,
                r.max_create_revision,
            ] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        TxnOp::Put {
            key,
            value,
            lease,
            prev_kv,
            ignore_value,
            ignore_lease,
        } => {
            out.push(OP_PUT);
            let mut flags = 0;
            for (set, bit) in [
                (*prev_kv, PUT_PREV_KV),
                (*ignore_value, PUT_IGNORE_VALUE),
                (*ignore_lease, PUT_IGNORE_LEASE),
            ] {
                if set {
                    flags |= bit;
                }
            }
            out.push(flags);
            out.extend_from_slice(&lease.to_be_bytes());
            put_bytes(out, key);
            put_bytes(out, value);
        }
        TxnOp::DeleteRange {
            key,
            range_end,
            prev_kv,
        } => {
            out.push(OP_DELETE_RANGE);
            out.push(if *prev_kv { DELETE_PREV_KV } else { 0 });
            put_bytes(out, key);
            put_bytes(out, range_end);
        }
        TxnOp::Txn(t) => {
            out.push(OP_TXN);
            encode_txn(out, t);
        }
    }
}

fn decode_txn(r: &mut Reader<'_>, data: &Bytes, depth: usize) -> Result<Txn, DecodeError> {
    if depth > TXN_DEPTH_MAX {
        return Err(r.invalid("txn depth", depth as u64));
    }
    let mut txn = Txn::default();
    let n = r.u32()? as usize;
    for _ in 0..n {
        let key = r.bytes()?.to_vec();
        let range_end = r.bytes()?.to_vec();
        let result = match r.u8()? {
            0 => CompareResult::Equal,
            1 => CompareResult::Greater,
            2 => CompareResult::Less,
            3 => CompareResult::NotEqual,
            other => return Err(r.invalid("compare result", other.into())),
        };
        let target = match r.u8()? {
            0 => CompareTarget::Version(r.i64()?),
            1 => CompareTarget::Create(r.i64()?),
            2 => CompareTarget::Mod(r.i64()?),
            3 => CompareTarget::Value(data.slice_ref(r.bytes()?)),
            4 => CompareTarget::Lease(r.i64()?),
            other => return Err(r.invalid("compare target", other.into())),
        };
        txn.compare.push(Compare {
            key,
            range_end,
            result,
            target,
        });
    }
    for branch in 0..2 {
        let n = r.u32()? as usize;
        let mut ops = Vec::new();
        for _ in 0..n {
            ops.push(decode_op(r, data, depth)?);
        }
        if branch == 0 {
            txn.success = ops;
        } else {
            txn.failure = ops;
        }
    }
    Ok(txn)
}

fn decode_op(r: &mut Reader<'_>, data: &Bytes, depth: usize) -> Result<TxnOp, DecodeError> {
    Ok(match r.u8()? {
        OP_RANGE => {
            let key = r.bytes()?.to_vec();
            let range_end = r.bytes()?.to_vec();
            let limit = r.i64()?;
            let revision = r.i64()?;
            let flags = r.u8()?;
            if flags & !RANGE_FLAGS != 0 {
                return Err(r.invalid("range flags", flags.into()));
            }
            let sort_order = match r.u8()? {
                0 => SortOrder::None,
                1 => SortOrder::Ascend,
                2 => SortOrder::Descend,
                other => return Err(r.invalid("sort order", other.into())),
            };
            let sort_target = match r.u8()? {
                0 => SortTarget::Key,
                1 => SortTarget::Version,
                2 => SortTarget::Create,
                3 => SortTarget::Mod,
                4 => SortTarget::Value,
                other => return Err(r.invalid("sort target", other.into())),
            };
            TxnOp::Range(RangeRequest {
                key,
                range_end,
                limit,
                revision,
                keys_only: flags & RANGE_KEYS_ONLY != 0,
                count_only: flags & RANGE_COUNT_ONLY != 0,
                sort_order,
                sort_target,
                min_mod_revision: r.i64()?,
                max_mod_revision: r.i64()?,
                min_create_revision: r.i64()?,
                max_create_revision: r.i64()?,
            })
        }
        OP_PUT => {
            let flags = r.u8()?;
            if flags & !PUT_FLAGS != 0 {
                return Err(r.invalid("put flags", flags.into()));
            }
            let lease = r.i64()?;
            let key = r.bytes()?.to_vec();
            let value = data.slice_ref(r.bytes()?);
            TxnOp::Put {
                key,
                value,
                lease,
                prev_kv: flags & PUT_PREV_KV != 0,
                ignore_value: flags & PUT_IGNORE_VALUE != 0,
                ignore_lease: flags & PUT_IGNORE_LEASE != 0,
            }
        }
        OP_DELETE_RANGE => {
            let flags = r.u8()?;
            if flags & !DELETE_FLAGS != 0 {
                return Err(r.invalid("delete flags", flags.into()));
            }
            TxnOp::DeleteRange {
                key: r.bytes()?.to_vec(),
                range_end: r.bytes()?.to_vec(),
                prev_kv: flags & DELETE_PREV_KV != 0,
            }
        }
        OP_TXN => TxnOp::Txn(decode_txn(r, data, depth + 1)?),
        other => return Err(r.invalid("txn operation", other.into())),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn any_command() -> impl Strategy<Value = Command> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            (bytes(), bytes(), any::<i64>(), any::<[bool; 3]>()).prop_map(
                |(key, value, lease, f)| {
                    Command::Put {
                        key,
                        value: value.into(),
                        lease,
                        prev_kv: f[0],
                        ignore_value: f[1],
                        ignore_lease: f[2],
                    }
                }
            ),
            (bytes(), bytes(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| {
                Command::DeleteRange {
                    key,
                    range_end,
                    prev_kv,
                }
            }),
            any_txn().prop_map(Command::Txn),
            any::<i64>().prop_map(|revision| Command::Compact { revision }),
            (any::<i64>(), any::<i64>()).prop_map(|(id, ttl)| Command::LeaseGrant { id, ttl }),
            any::<i64>().prop_map(|id| Command::LeaseRevoke { id }),
        ]
    }

    fn any_op() -> impl Strategy<Value = TxnOp> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..8);
        let leaf = prop_oneof![
            (bytes(), bytes(), any::<i64>(), any::<[bool; 3]>()).prop_map(|(k, v, lease, f)| {
                TxnOp::Put {
                    key: k,
                    value: v.into(),
                    lease,
                    prev_kv: f[0],
                    ignore_value: f[1],
                    ignore_lease: f[2],
                }
            }),
            (bytes(), bytes(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| {
                TxnOp::DeleteRange {
                    key,
                    range_end,
                    prev_kv,
                }
            }),
            (
                bytes(),
                bytes(),
                any::<[i64; 6]>(),
                any::<[bool; 2]>(),
                0u8..3,
                0u8..5
            )
                .prop_map(|(key, range_end, n, f, order, target)| {
                    TxnOp::Range(RangeRequest {
                        key,
                        range_end,
                        limit: n[0],
                        revision: n[1],
                        keys_only: f[0],
                        count_only: f[1],
                        sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend]
                            [order as usize],
                        sort_target: [
                            SortTarget::Key,
                            SortTarget::Version,
                            SortTarget::Create,
                            SortTarget::Mod,
                            SortTarget::Value,
                        ][target as usize],
                        min_mod_revision: n[2],
                        max_mod_revision: n[3],
                        min_create_revision: n[4],
                        max_create_revision: n[5],
                    })
                }),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            (
                proptest::collection::vec(inner.clone(), 0..3),
                proptest::collection::vec(inner, 0..3),
            )
                .prop_map(|(success, failure)| {
                    TxnOp::Txn(Txn {
                        compare: Vec::new(),
                        success,
                        failure,
                    })
                })
        })
    }

    fn any_compare() -> impl Strategy<Value = Compare> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..8);
        (bytes(), bytes(), 0u8..4, 0u8..5, any::<i64>(), bytes()).prop_map(
            |(key, range_end, result, target, n, value)| Compare {
                key,
                range_end,
                result: [
                    CompareResult::Equal,
                    CompareResult::Greater,
                    CompareResult::Less,
                    CompareResult::NotEqual,
                ][result as usize],
                target: match target {
                    0 => CompareTarget::Version(n),
                    1 => CompareTarget::Create(n),
                    2 => CompareTarget::Mod(n),
                    3 => CompareTarget::Value(value.into()),
                    _ => CompareTarget::Lease(n),
                },
            },
        )
    }

    fn any_txn() -> impl Strategy<Value = Txn> {
        (
            proptest::collection::vec(any_compare(), 0..3),
            proptest::collection::vec(any_op(), 0..4),
            proptest::collection::vec(any_op(), 0..4),
        )
            .prop_map(|(compare, success, failure)| Txn {
                compare,
                success,
                failure,
            })
    }

    proptest! {
        #[test]
        fn commands_round_trip(command in any_command()) {
            prop_assert_eq!(Command::decode(&command.encode()), Ok(command));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Command::decode(&Bytes::from(data));
        }

        #[test]
        fn truncated_commands_are_rejected(command in any_command(), cut in any::<prop::sample::Index>()) {
            let encoded = command.encode();
            let len = cut.index(encoded.len());
            prop_assert!(Command::decode(&encoded.slice(..len)).is_err());
        }
    }

    #[test]
    fn unknown_tags_and_flags_are_rejected() {
        assert!(matches!(
            Command::decode(&Bytes::from_static(&[COMMAND_V1, 9])),
            Err(DecodeError::Invalid {
                field: "kind tag",
                value: 9,
                ..
            })
        ));
        // A txn nested deeper than the limit does not decode.
        let mut deep = Txn::default();
        for _ in 0..TXN_DEPTH_MAX {
            deep = Txn {
                success: vec![TxnOp::Txn(deep)],
                ..Txn::default()
            };
        }
        assert!(matches!(
            Command::decode(&Command::Txn(deep).encode()),
            Err(DecodeError::Invalid {
                field: "txn depth",
                ..
            })
        ));
        let mut put = Command::put("k", "v").encode().to_vec();
        put[2] = 0x80;
        assert!(matches!(
            Command::decode(&Bytes::from(put)),
            Err(DecodeError::Invalid {
                field: "put flags",
                ..
            })
        ));
        assert!(matches!(
            Command::decode(&Bytes::from_static(&[2, TAG_PUT])),
            Err(DecodeError::UnknownVersion { version: 2, .. })
        ));
        assert!(matches!(
            Command::decode(&Bytes::new()),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn validate_applies_etcd_rules() {
        let options = StorageOptions {
            request_bytes_max: 10,
            ..StorageOptions::default()
        };
        assert_eq!(Command::put("k", "v").validate(&options), Ok(()));
        assert_eq!(
            Command::put("", "v").validate(&options),
            Err(RequestError::EmptyKey)
        );
        assert_eq!(
            Command::put("key", "12345678").validate(&options),
            Err(RequestError::TooLarge { size: 11, max: 10 })
        );
        assert_eq!(
            Command::delete_range("", "z").validate(&options),
            Err(RequestError::EmptyKey)
        );
        let ignore_value = Command::Put {
            key: b"k".to_vec(),
            value: Bytes::from_static(b"v"),
            lease: 0,
            prev_kv: false,
            ignore_value: true,
            ignore_lease: false,
        };
        assert_eq!(
            ignore_value.validate(&options),
            Err(RequestError::ValueProvided)
        );
    }
}
