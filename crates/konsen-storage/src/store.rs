//! Opening a node's data dir: [`RocksStore::open`] checks that the dir is
//! this node's (or records that it is, when new) and hands out the log and
//! the state machine that share the database.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use konsen_core::NodeId;
use rocksdb::WriteBatch;

use crate::codec::{decode_identity, encode_identity};
use crate::db::{CF_META, Db, META_IDENTITY};
use crate::error::StorageError;
use crate::kv::KvStore;
use crate::log::LogStore;
use crate::options::StorageOptions;

/// The file naming a RocksDB database's current manifest; every database
/// has one.
const ROCKSDB_CURRENT: &str = "CURRENT";

/// Which cluster and which member a data dir belongs to. Recorded when the
/// dir is created and checked on every open, so that a node pointed at
/// another node's dir refuses to start instead of serving its data as its
/// own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    pub cluster_id: u64,
    pub node_id: NodeId,
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster {:#x} node {}", self.cluster_id, self.node_id)
    }
}

/// A node's storage: its Raft log and its key-value state machine, in one
/// RocksDB database.
///
/// The two halves are separate values so that the driver can append to
/// the log while readers use the state machine; move them apart with
/// `let RocksStore { log, kv } = store;`.
#[derive(Debug)]
pub struct RocksStore {
    pub log: LogStore,
    pub kv: KvStore,
}

impl RocksStore {
    /// Opens the data dir at `path` for the node `identity`.
    ///
    /// A directory that does not exist or is empty gets a new database that
    /// records `identity`. An existing database must belong to `identity`;
    /// another node's, a damaged one, or a directory that is not a konsen
    /// database at all (nothing is written to it then) is an error naming
    /// the path. Nothing is ever reset or recreated over existing files.
    ///
    /// If the very first open of a new dir is interrupted before it records
    /// the identity, later opens refuse the dir (it cannot be told from a
    /// damaged one); remove it by hand if the node never ran.
    pub fn open(
        path: impl AsRef<Path>,
        identity: NodeIdentity,
        options: StorageOptions,
    ) -> Result<RocksStore, StorageError> {
        let path = path.as_ref();
        if identity.cluster_id == 0 || identity.node_id == 0 {
            return Err(StorageError::InvalidIdentity(identity));
        }
        let io_error = |source| StorageError::Io {
            path: path.to_path_buf(),
            source,
        };
        let fresh = is_new_or_empty(path)?;
        if fresh {
            std::fs::create_dir_all(path).map_err(io_error)?;
        } else if !path.join(ROCKSDB_CURRENT).try_exists().map_err(io_error)? {
            // Checked before RocksDB sees the dir: it would leave lock and
            // log files behind in a directory that is not its own.
            return Err(StorageError::NotADataDir {
                path: path.to_path_buf(),
                reason: format!("it is not empty and has no {ROCKSDB_CURRENT} file"),
            });
        }
        let db = Arc::new(Db::open(path, fresh, options.hist_memtable_bytes)?);
        check_identity(&db, identity, fresh)?;
        if options.unsafe_no_fsync {
            tracing::warn!(
                path = %path.display(),
                "unsafe_no_fsync is set: log appends are not synced to disk, so durability is \
                 off; a machine crash can lose acknowledged writes and votes"
            );
        }
        let log = LogStore::open(Arc::clone(&db), !options.unsafe_no_fsync)?;
        let kv = KvStore::open(db)?;
        if kv.applied_index() > log.last() {
            // Only committed entries are applied, and those stay in the log.
            return Err(log.db().corruption(format!(
                "the state machine applied index {} is past the log's last index {}",
                kv.applied_index(),
                log.last()
            )));
        }
        tracing::info!(
            path = %path.display(),
            %identity,
            first_index = log.first(),
            last_index = log.last(),
            applied = kv.applied_index(),
            revision = kv.revision(),
            "opened storage"
        );
        Ok(RocksStore { log, kv })
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        self.log.path()
    }

    /// Writes every memtable out to table files. Durability never needs it
    /// (the WAL has everything); tests use it to get data into `.sst` files.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.log.db().flush()
    }
}

/// Whether `path` is missing or an empty directory: the only case in which
/// a database may be created there.
fn is_new_or_empty(path: &Path) -> Result<bool, StorageError> {
    let io_error = |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_dir(path) {
        Ok(mut entries) => match entries.next() {
            None => Ok(true),
            Some(entry) => entry.map(|_| false).map_err(io_error),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io_error(e)),
    }
}

/// Checks the recorded identity against `expected`, or records it in a
/// database created just now.
///
/// An existing database without an identity is refused, whatever else it
/// holds: it is damaged, or its first open crashed before recording the
/// identity, and the two cannot be told apart. Treating it as new could
/// make a node forget its votes and log.
fn check_identity(db: &Db, expected: NodeIdentity, fresh: bool) -> Result<(), StorageError> {
    if let Some(bytes) = db.get(CF_META, META_IDENTITY)? {
        let found = decode_identity(&bytes).map_err(|e| db.undecodable("node identity", e))?;
        if found != expected {
            return Err(StorageError::IdentityMismatch {
                path: PathBuf::from(db.path()),
                expected,
                found,
            });
        }
        return Ok(());
    }
    if !fresh {
        return Err(db.corruption(
            "the database has no node identity: it is damaged, or its first start was \
             interrupted (then, and only if this node never joined a cluster, remove the dir)",
        ));
    }
    let mut batch = WriteBatch::default();
    batch.put_cf(db.cf(CF_META), META_IDENTITY, encode_identity(&expected));
    // Synced even with unsafe_no_fsync: it is written once, and a lost
    // identity makes the dir unusable.
    db.write(batch, true)?;
    tracing::info!(path = %db.path().display(), identity = %expected, "recorded node identity in new data dir");
    Ok(())
}
