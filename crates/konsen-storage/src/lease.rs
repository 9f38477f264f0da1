//! Leases, as the state machine keeps them: which leases exist (granted
//! and not yet revoked), each one's granted TTL, and the keys attached to
//! each.
//!
//! A lease is granted and revoked through the log (`Command::LeaseGrant`,
//! `Command::LeaseRevoke`), so every replica holds the same table at the
//! same applied index. *When* a lease expires is not state: only the
//! leader keeps the clock (the server's lessor), and it revokes an
//! expired lease through the log like a client would. Revoking deletes the
//! lease's keys in one revision.
//!
//! On disk a lease is one record in `meta`, `lease/` + the id (`i64`
//! big-endian) → version, TTL, written in the same batch as the entry that
//! granted it. In memory, [`LeaseTable`] holds the leases and, derived from
//! the key index, the keys attached to each; it is shared with the readers
//! (`LeaseLeases`, `LeaseTimeToLive`) behind a lock, rebuilt on open and on
//! a snapshot install.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::codec::{decode_revision, encode_revision};
use crate::db::{CF_META, Db};
use crate::error::StorageError;
use crate::index::KeyIndex;
use crate::shared::Shared;

/// The largest TTL a lease may be granted, in seconds (etcd's
/// `MaxLeaseTTL`, about 285 years).
pub const LEASE_TTL_MAX: i64 = 9_000_000_000;

/// The first and past-the-last keys of the lease records in `meta`.
pub(crate) const META_LEASE_PREFIX: &[u8] = b"lease/";
pub(crate) const META_LEASE_END: &[u8] = b"lease0";

/// The `meta` key of lease `id`.
pub(crate) fn lease_key(id: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(META_LEASE_PREFIX.len() + 8);
    key.extend_from_slice(META_LEASE_PREFIX);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The lease id of a `meta` lease key.
pub(crate) fn parse_lease_key(key: &[u8]) -> Option<i64> {
    let id = key.strip_prefix(META_LEASE_PREFIX)?;
    Some(i64::from_be_bytes(id.try_into().ok()?))
}

/// A lease record's value: version, TTL (the revision record's format).
pub(crate) fn encode_lease(ttl: i64) -> Vec<u8> {
    encode_revision(ttl)
}

/// The leases recorded in `meta`, as of `view` if given, in key order.
pub(crate) fn read_leases(
    db: &Db,
    view: Option<&rocksdb::Snapshot<'_>>,
) -> Result<Vec<(i64, i64)>, StorageError> {
    let mut leases = Vec::new();
    let mut it = db.iter_in(view, CF_META, META_LEASE_PREFIX, Some(META_LEASE_END));
    it.seek(META_LEASE_PREFIX);
    while let Some((key, value)) = it.item() {
        let id = parse_lease_key(key)
            .ok_or_else(|| db.corruption(format!("malformed lease key {key:?}")))?;
        let ttl =
            decode_revision(value).map_err(|e| db.undecodable(format_args!("lease {id}"), e))?;
        leases.push((id, ttl));
        it.next();
    }
    it.status().map_err(|e| db.error(e))?;
    Ok(leases)
}

/// The leases that exist and the keys attached to each.
#[derive(Debug, Default)]
pub struct LeaseTable {
    ttls: BTreeMap<i64, i64>,
    /// Lease → the live keys whose record names it. Derived from the key
    /// index; a key may name a lease that no longer exists only in a data
    /// dir written before leases were checked.
    keys: HashMap<i64, BTreeSet<Vec<u8>>>,
}

impl LeaseTable {
    /// The table of `leases`, with the attachments the live keys of
    /// `index` record.
    pub(crate) fn new(leases: Vec<(i64, i64)>, index: &KeyIndex) -> LeaseTable {
        let mut table = LeaseTable {
            ttls: leases.into_iter().collect(),
            keys: HashMap::new(),
        };
        for (key, meta) in index.iter() {
            if meta.lease != 0 {
                table.attach(key, 0, meta.lease);
            }
        }
        table
    }

    /// Lease `id`'s granted TTL, in seconds, if it exists.
    pub fn ttl(&self, id: i64) -> Option<i64> {
        self.ttls.get(&id).copied()
    }

    pub fn contains(&self, id: i64) -> bool {
        self.ttls.contains_key(&id)
    }

    /// Every lease and its TTL, by id.
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.ttls.iter().map(|(&id, &ttl)| (id, ttl)).collect()
    }

    /// The keys attached to lease `id`, sorted.
    pub fn keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.key_refs(id).cloned().collect()
    }

    pub(crate) fn key_refs(&self, id: i64) -> impl Iterator<Item = &Vec<u8>> {
        self.keys.get(&id).into_iter().flatten()
    }

    /// Moves `key` from lease `old` to lease `new` (0: none).
    pub(crate) fn attach(&mut self, key: &[u8], old: i64, new: i64) {
        if old == new {
            return;
        }
        if old != 0
            && let Some(keys) = self.keys.get_mut(&old)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.keys.remove(&old);
            }
        }
        if new != 0 {
            self.keys.entry(new).or_default().insert(key.to_vec());
        }
    }

    /// Records that lease `id` now exists with `ttl` (`Some`) or was
    /// revoked (`None`).
    pub(crate) fn set(&mut self, id: i64, ttl: Option<i64>) {
        match ttl {
            Some(ttl) => {
                self.ttls.insert(id, ttl);
            }
            None => {
                self.ttls.remove(&id);
            }
        }
    }
}

/// The lease table shared by the store and its readers.
pub(crate) type SharedLeases = Shared<LeaseTable>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_round_trip_and_sort_inside_the_prefix() {
        for id in [1, 42, i64::MAX, -1, i64::MIN] {
            let key = lease_key(id);
            assert_eq!(parse_lease_key(&key), Some(id));
            assert!(key.as_slice() >= META_LEASE_PREFIX && key.as_slice() < META_LEASE_END);
        }
        assert_eq!(parse_lease_key(b"lease/abc"), None);
        assert_eq!(parse_lease_key(b"kv_state"), None);
    }

    #[test]
    fn attachments_follow_the_keys() {
        let mut t = LeaseTable::default();
        t.set(7, Some(10));
        t.attach(b"a", 0, 7);
        t.attach(b"b", 0, 7);
        assert_eq!(t.keys(7), vec![b"a".to_vec(), b"b".to_vec()]);
        t.attach(b"a", 7, 8);
        assert_eq!(t.keys(7), vec![b"b".to_vec()]);
        assert_eq!(t.keys(8), vec![b"a".to_vec()]);
        t.attach(b"b", 7, 0);
        assert!(t.keys(7).is_empty());
        assert_eq!(t.ttl(7), Some(10));
        t.set(7, None);
        assert!(!t.contains(7));
    }
}
