//! konsen-rpc: everything that crosses the network, and nothing else.
//!
//! * [`etcd`]: the etcd v3 client API (generated), which clients such as
//!   `etcdctl` and `konsen-cli` speak to every node.
//! * [`peer`]: konsen's own peer protocol (generated from
//!   `proto/konsen/raft.proto`): Raft messages, forwarded writes.
//! * [`convert`]: the one place where wire types become core and storage
//!   types and back. Bad wire input is a [`ConvertError`], never a panic.
//! * [`net`]: listeners and connectors, injected into servers and clients
//!   so that a simulation can replace TCP.
//!
//! # Architecture invariant
//!
//! prost types stop here: konsen-core and konsen-storage never see them.

pub mod convert;
mod error;
pub mod net;

pub use error::ConvertError;

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
