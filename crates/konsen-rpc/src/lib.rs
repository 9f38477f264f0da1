//! placeholder

/// Code generated from the etcd v3 client API protos (`proto/etcd`).
///
/// The three packages are siblings because generated `etcdserverpb` code
/// refers to `super::mvccpb` and `super::authpb`.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    missing_debug_implementations,
    unreachable_pub
)]
pub mod etcd {
    /// etcd `mvccpb`: `KeyValue`, `Event`.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// etcd `authpb`: `User`, `Permission`, `Role`.
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    /// etcd `etcdserverpb`: the KV, Watch, Lease, Cluster, Maintenance and
    /// Auth services with their messages.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

/// Code generated from konsen's peer protocol (`proto/konsen/raft.proto`).
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    missing_debug_implementations,
    unreachable_pub
)]
pub mod peer {
    tonic::include_proto!("konsen.raft");
}
