//! etcd KV requests <-> konsen-storage commands and reads.
//!
//! Requests become [`Command`]s (writes) or [`RangeRequest`]s (reads);
//! validation of their contents (empty key, size) is
//! [`Command::validate`]'s job, not this module's. What etcd has and
//! konsen-storage does not (sorting, revision filters) comes back as a
//! [`RangeExtras`] for the server to apply.

use konsen_storage::{Command, KeyValue, RangeRequest};

use crate::ConvertError;
use crate::etcd::etcdserverpb::{self as pb, range_request::SortOrder, range_request::SortTarget};
use crate::etcd::mvccpb;

/// The parts of an etcd range request that the storage read does not do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeExtras {
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Revision filters; 0 means no bound.
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

impl RangeExtras {
    /// Whether the storage result needs any post-processing.
    pub fn is_trivial(&self) -> bool {
        matches!(self.sort_order, SortOrder::None | SortOrder::Ascend)
            && self.sort_target == SortTarget::Key
            && self.min_mod_revision == 0
            && self.max_mod_revision == 0
            && self.min_create_revision == 0
            && self.max_create_revision == 0
    }
}

/// An etcd range request as a storage read plus what the server must do
/// on top. Fails on an unknown sort order or target.
pub fn range_request_from_etcd(
    r: &pb::RangeRequest,
) -> Result<(RangeRequest, RangeExtras), ConvertError> {
    let sort_order = SortOrder::try_from(r.sort_order).map_err(|_| ConvertError::UnknownEnum {
        message: "RangeRequest",
        field: "sort_order",
        value: r.sort_order,
    })?;
    let sort_target =
        SortTarget::try_from(r.sort_target).map_err(|_| ConvertError::UnknownEnum {
            message: "RangeRequest",
            field: "sort_target",
            value: r.sort_target,
        })?;
    let extras = RangeExtras {
        sort_order,
        sort_target,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    };
    let request = RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        // With extras the limit applies after sorting and filtering.
        limit: if extras.is_trivial() { r.limit } else { 0 },
        revision: r.revision,
        keys_only: r.keys_only,
        count_only: r.count_only && extras.is_trivial(),
    };
    Ok((request, extras))
}

/// An etcd put as a storage command.
pub fn put_request_to_command(r: pb::PutRequest) -> Command {
    Command::Put {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

/// An etcd delete as a storage command.
pub fn delete_request_to_command(r: pb::DeleteRangeRequest) -> Command {
    Command::DeleteRange {
        key: r.key,
        range_end: r.range_end,
        prev_kv: r.prev_kv,
    }
}

/// A stored key-value as etcd's `mvccpb.KeyValue`.
pub fn key_value_to_etcd(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_sort_order_is_an_error() {
        let r = pb::RangeRequest {
            key: b"a".to_vec(),
            sort_order: 7,
            ..Default::default()
        };
        assert!(matches!(
            range_request_from_etcd(&r),
            Err(ConvertError::UnknownEnum {
                field: "sort_order",
                ..
            })
        ));
    }

    #[test]
    fn plain_range_passes_the_limit_to_storage() {
        let r = pb::RangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            limit: 3,
            ..Default::default()
        };
        let (request, extras) = range_request_from_etcd(&r).unwrap();
        assert!(extras.is_trivial());
        assert_eq!(request.limit, 3);
        assert_eq!(request.range_end, b"b");
    }
}
