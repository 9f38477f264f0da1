//! [`Command`]: what a log entry asks the key-value state machine to do, and
//! its binary format.
//!
//! The server encodes a client's write as a `Command`, proposes the bytes,
//! and every replica decodes and applies them. The format is
//! `[version][kind tag][fields...]`: the version byte lets the format change
//! without breaking old logs, and the tag leaves room for more kinds (a
//! transaction will be tag 3). Decoding never panics: replicas must agree on
//! what a payload means, including that a bad one means nothing.

use bytes::Bytes;

use crate::codec::{Reader, put_bytes};
use crate::error::{DecodeError, RequestError};
use crate::options::StorageOptions;

const COMMAND_V1: u8 = 1;
const TAG_PUT: u8 = 1;
const TAG_DELETE_RANGE: u8 = 2;

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
        }
        Bytes::from(out)
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
            other => return Err(r.invalid("kind tag", other.into())),
        };
        r.finish()?;
        Ok(command)
    }
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
        ]
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
            Command::decode(&Bytes::from_static(&[COMMAND_V1, 3])),
            Err(DecodeError::Invalid {
                field: "kind tag",
                value: 3,
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
