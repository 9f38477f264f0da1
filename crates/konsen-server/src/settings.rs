//! Cluster settings: read from the YAML file (or the embedded default),
//! overridden by `KONSEN_*` environment variables, checked, and resolved
//! for this node with the command-line flags.
//!
//! Precedence, lowest first: the file, the environment
//! (`KONSEN_TICK_MS=50`, `KONSEN_LIMITS__REQUEST_BYTES_MAX=1024`,
//! `KONSEN_ENDPOINTS=a:1,b:2`), the flags. Every error names the field and
//! where the settings came from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use config::{Environment, File, FileFormat};
use konsen_core::NodeId;
use serde::Deserialize;

use crate::args::{Args, FLAG_ENV_VARS};

/// Used when no `--config` is given and `conf/cluster.yml` does not exist.
const DEFAULT_CONFIG_YAML: &str = "endpoints:\n  - 127.0.0.1:2379\n";
const DEFAULT_CONFIG_PATH: &str = "conf/cluster.yml";

/// The settings file, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// `host:port` of every node; node id i is position i (from 1).
    pub endpoints: Vec<String>,
    /// Default: derived from the endpoint list.
    #[serde(default)]
    pub cluster_id: Option<u64>,
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    #[serde(default = "default_heartbeat_ticks")]
    pub heartbeat_ticks: u32,
    #[serde(default = "default_election_ticks")]
    pub election_ticks: u32,
    #[serde(default)]
    pub limits: Limits,
    /// Compact the log once this many applied entries lie between the last
    /// compaction point and the tail kept for slow followers.
    #[serde(default = "default_snapshot_entries_max")]
    pub snapshot_entries_max: u64,
    /// Applied entries kept in the log after a compaction, so that a
    /// follower a little behind catches up from the log, not a snapshot.
    #[serde(default = "default_snapshot_tail_entries")]
    pub snapshot_tail_entries: u64,
    /// Bytes of key-value records in one snapshot chunk on the wire.
    #[serde(default = "default_snapshot_chunk_bytes_max")]
    pub snapshot_chunk_bytes_max: usize,
    /// UNSAFE, for the fault-injection suite's negative control only:
    /// serve linearizable reads from this node's applied state, without
    /// ReadIndex, so reads may be stale. Default false.
    #[serde(default)]
    pub unsafe_stale_reads: bool,
    /// UNSAFE, for the fault-injection suite's watch negative control
    /// only: a watch stream that missed changes (it fell behind the feed,
    /// or its node installed a snapshot) skips them instead of reading
    /// them from the history, so watchers lose events. Default false.
    #[serde(default)]
    pub unsafe_watch_ignore_gaps: bool,
    /// How often a watcher created with `progress_notify` that saw no
    /// event is sent the current revision (etcd's 10 minutes).
    #[serde(default = "default_watch_progress_notify_interval_ms")]
    pub watch_progress_notify_interval_ms: u64,
    /// etcd's `--auto-compaction-mode`: `revision` (keep the last
    /// `auto_compaction_retention` revisions) or `periodic` (keep what
    /// was written in the last `auto_compaction_retention`, a duration).
    #[serde(default)]
    pub auto_compaction_mode: AutoCompactionMode,
    /// etcd's `--auto-compaction-retention`: a count of revisions, or a
    /// duration (`90s`, `30m`, `1h`, or a bare number of hours as etcd
    /// reads it); `0` turns auto-compaction off. Default: 10000 revisions.
    #[serde(default = "default_auto_compaction_retention")]
    pub auto_compaction_retention: String,
}

/// How history is compacted without a client asking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoCompactionMode {
    #[default]
    Revision,
    Periodic,
}

/// Auto-compaction as resolved from the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    Off,
    /// Keep at least this many revisions; compact once twice as many are
    /// kept, so each compaction drops about this many.
    Revisions(i64),
    /// Keep what was written within this long.
    Periodic(Duration),
}

fn default_auto_compaction_retention() -> String {
    "10000".to_string()
}

/// Reads `retention` for `mode`, etcd's way.
pub fn parse_auto_compaction(
    mode: AutoCompactionMode,
    retention: &str,
) -> Result<AutoCompaction, String> {
    let retention = retention.trim();
    if retention == "0" {
        return Ok(AutoCompaction::Off);
    }
    match mode {
        AutoCompactionMode::Revision => retention
            .parse::<i64>()
            .ok()
            .filter(|&n| n > 0)
            .map(AutoCompaction::Revisions)
            .ok_or_else(|| format!("{retention:?} is not a count of revisions")),
        AutoCompactionMode::Periodic => {
            let (number, unit) = match retention.find(|c: char| !c.is_ascii_digit()) {
                Some(i) => retention.split_at(i),
                None => (retention, "h"),
            };
            let secs = match unit {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                _ => return Err(format!("{retention:?}: use a number with s, m or h")),
            };
            number
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .map(|n| AutoCompaction::Periodic(Duration::from_secs(n * secs)))
                .ok_or_else(|| format!("{retention:?} is not a duration"))
        }
    }
}

/// Every limit a node enforces on its clients.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes of key and value in one write (etcd `--max-request-bytes`).
    pub request_bytes_max: usize,
    /// Client requests one node serves at once; more are refused with
    /// RESOURCE_EXHAUSTED.
    pub concurrent_requests_max: usize,
    /// Writes and linearizable reads queued at one node's Raft loop (the
    /// proposal channel and the waiting lists each); more are refused.
    pub pending_proposals_max: usize,
    /// How long a client request waits for the cluster before failing
    /// with DEADLINE_EXCEEDED.
    pub request_timeout_ms: u64,
    /// The most compares, and the most operations in each branch, of one
    /// txn (etcd's `--max-txn-ops`).
    pub txn_ops_max: usize,
    /// Watch streams one node serves at once; more are refused with
    /// RESOURCE_EXHAUSTED.
    pub watch_streams_max: usize,
    /// Watchers on one watch stream; more creates are refused.
    pub watchers_per_stream_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_bytes_max: konsen_storage::REQUEST_BYTES_MAX_DEFAULT,
            concurrent_requests_max: 1024,
            pending_proposals_max: 4096,
            request_timeout_ms: 5000,
            txn_ops_max: konsen_storage::TXN_OPS_MAX_DEFAULT,
            watch_streams_max: 10_000,
            watchers_per_stream_max: 100_000,
        }
    }
}

fn default_watch_progress_notify_interval_ms() -> u64 {
    10 * 60 * 1000
}
fn default_tick_ms() -> u64 {
    100
}
fn default_heartbeat_ticks() -> u32 {
    1
}
fn default_election_ticks() -> u32 {
    10
}
fn default_snapshot_entries_max() -> u64 {
    10_000
}
fn default_snapshot_tail_entries() -> u64 {
    5_000
}
fn default_snapshot_chunk_bytes_max() -> usize {
    1024 * 1024
}
/// When to compact the log and how to send snapshots: the file's
/// `snapshot_*` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSettings {
    pub entries_max: u64,
    pub tail_entries: u64,
    pub chunk_bytes_max: usize,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            entries_max: default_snapshot_entries_max(),
            tail_entries: default_snapshot_tail_entries(),
            chunk_bytes_max: default_snapshot_chunk_bytes_max(),
        }
    }
}

/// A snapshot chunk must fit in one gRPC message of the peer service
/// (`PEER_MESSAGE_BYTES_MAX`, 64 MiB).
pub const SNAPSHOT_CHUNK_BYTES_LIMIT: usize = 32 * 1024 * 1024;

/// Everything a node needs to start, resolved and checked.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the cluster settings came from, for messages.
    pub source: String,
    pub cluster_id: u64,
    pub node_id: NodeId,
    /// Node id → endpoint, for every node (this one included).
    pub endpoints: Vec<(NodeId, String)>,
    pub data_dir: PathBuf,
    pub tick: Duration,
    pub heartbeat_ticks: u32,
    pub election_ticks: u32,
    pub limits: Limits,
    pub snapshot: SnapshotSettings,
    /// Serve linearizable reads as serializable ones (stale reads); see
    /// [`ClusterFile::unsafe_stale_reads`].
    pub unsafe_stale_reads: bool,
    /// See [`ClusterFile::unsafe_watch_ignore_gaps`].
    pub unsafe_watch_ignore_gaps: bool,
    pub auto_compaction: AutoCompaction,
    /// See [`ClusterFile::watch_progress_notify_interval_ms`].
    pub watch_progress_notify_interval: Duration,
}

impl Settings {
    /// This node's endpoint.
    pub fn endpoint(&self) -> &str {
        self.endpoint_of(self.node_id)
            .expect("settings invariant: own node id is in the endpoint list")
    }

    /// The endpoint of node `id`, if it is a member.
    pub fn endpoint_of(&self, id: NodeId) -> Option<&str> {
        self.endpoints
            .iter()
            .find(|(n, _)| *n == id)
            .map(|(_, e)| e.as_str())
    }

    /// The storage settings that follow from these.
    pub fn storage_options(&self) -> konsen_storage::StorageOptions {
        konsen_storage::StorageOptions {
            request_bytes_max: self.limits.request_bytes_max,
            txn_ops_max: self.limits.txn_ops_max,
            ..konsen_storage::StorageOptions::default()
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.request_timeout_ms)
    }

    /// The shortest lease TTL granted, in seconds: one and a half times
    /// the longest election timeout, rounded up (etcd's `minLeaseTTL`), so
    /// that a lease outlives a leader election. A shorter TTL asked for is
    /// raised to it.
    pub fn lease_ttl_min_secs(&self) -> i64 {
        let election_ms = self.tick.as_millis() as i64 * 2 * i64::from(self.election_ticks);
        ((3 * election_ms / 2 + 999) / 1000).max(1)
    }

    /// Reads and resolves the settings for `args`, with the process's
    /// environment.
    pub fn load(args: &Args) -> Result<Settings> {
        Self::load_with_env(args, settings_env(std::env::vars()))
    }

    /// [`Settings::load`] with an explicit environment (for tests).
    pub fn load_with_env(args: &Args, env: HashMap<String, String>) -> Result<Settings> {
        let (file, source) = read_file(args.config.as_deref(), env)?;
        resolve(file, source, args)
    }
}

/// The environment variables that name settings of the cluster file.
/// Other `KONSEN_*` variables (the flags' own, and those of tests and
/// benchmarks such as `KONSEN_SIM_SEEDS`) are not settings and are left
/// alone, so that they cannot stop a node from starting.
fn settings_env(vars: impl Iterator<Item = (String, String)>) -> HashMap<String, String> {
    const SETTINGS: &[&str] = &[
        "KONSEN_ENDPOINTS",
        "KONSEN_CLUSTER_ID",
        "KONSEN_TICK_MS",
        "KONSEN_HEARTBEAT_TICKS",
        "KONSEN_ELECTION_TICKS",
        "KONSEN_UNSAFE_STALE_READS",
        "KONSEN_UNSAFE_WATCH_IGNORE_GAPS",
        "KONSEN_SNAPSHOT_ENTRIES_MAX",
        "KONSEN_SNAPSHOT_TAIL_ENTRIES",
        "KONSEN_SNAPSHOT_CHUNK_BYTES_MAX",
        "KONSEN_AUTO_COMPACTION_MODE",
        "KONSEN_AUTO_COMPACTION_RETENTION",
        "KONSEN_WATCH_PROGRESS_NOTIFY_INTERVAL_MS",
    ];
    vars.filter(|(k, _)| {
        !FLAG_ENV_VARS.contains(&k.as_str())
            && (SETTINGS.contains(&k.as_str()) || k.starts_with("KONSEN_LIMITS__"))
    })
    .collect()
}

/// Reads the settings file (or the embedded default) with the environment
/// on top.
fn read_file(path: Option<&Path>, env: HashMap<String, String>) -> Result<(ClusterFile, String)> {
    let builder = config::Config::builder();
    let (builder, source) = match path {
        Some(p) => (
            builder.add_source(File::from(p).format(FileFormat::Yaml).required(true)),
            p.display().to_string(),
        ),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => (
            builder.add_source(File::new(DEFAULT_CONFIG_PATH, FileFormat::Yaml)),
            DEFAULT_CONFIG_PATH.to_string(),
        ),
        None => (
            builder.add_source(File::from_str(DEFAULT_CONFIG_YAML, FileFormat::Yaml)),
            "the built-in default (single node)".to_string(),
        ),
    };
    let environment = Environment::with_prefix("KONSEN")
        .prefix_separator("_")
        .separator("__")
        .list_separator(",")
        .with_list_parse_key("endpoints")
        .try_parsing(true)
        .source(Some(env));
    let file: ClusterFile = builder
        .add_source(environment)
        .build()
        .and_then(|c| c.try_deserialize())
        .with_context(|| {
            format!("invalid cluster settings in {source} (or KONSEN_* environment)")
        })?;
    Ok((file, source))
}

/// Checks the file's settings and picks this node with the flags.
fn resolve(file: ClusterFile, source: String, args: &Args) -> Result<Settings> {
    let bad = |field: &str, why: String| {
        anyhow::anyhow!("invalid cluster settings in {source}: {field}: {why}")
    };
    if file.endpoints.is_empty() {
        return Err(bad("endpoints", "must list at least one node".into()));
    }
    for (i, e) in file.endpoints.iter().enumerate() {
        let ok = e
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(bad(
                "endpoints",
                format!("entry {} ({e:?}) is not host:port", i + 1),
            ));
        }
        if file.endpoints[..i].contains(e) {
            return Err(bad("endpoints", format!("{e} is listed twice")));
        }
    }
    if file.tick_ms == 0 {
        return Err(bad("tick_ms", "must be at least 1".into()));
    }
    if file.heartbeat_ticks == 0 {
        return Err(bad("heartbeat_ticks", "must be at least 1".into()));
    }
    if file.election_ticks <= file.heartbeat_ticks {
        return Err(bad(
            "election_ticks",
            "must be greater than heartbeat_ticks".into(),
        ));
    }
    let limits = &file.limits;
    for (field, value) in [
        ("limits.request_bytes_max", limits.request_bytes_max as u64),
        (
            "limits.concurrent_requests_max",
            limits.concurrent_requests_max as u64,
        ),
        (
            "limits.pending_proposals_max",
            limits.pending_proposals_max as u64,
        ),
        ("limits.request_timeout_ms", limits.request_timeout_ms),
        ("limits.txn_ops_max", limits.txn_ops_max as u64),
        ("limits.watch_streams_max", limits.watch_streams_max as u64),
        (
            "limits.watchers_per_stream_max",
            limits.watchers_per_stream_max as u64,
        ),
        (
            "watch_progress_notify_interval_ms",
            file.watch_progress_notify_interval_ms,
        ),
    ] {
        if value == 0 {
            return Err(bad(field, "must be at least 1".into()));
        }
    }
    if file.snapshot_entries_max == 0 {
        return Err(bad("snapshot_entries_max", "must be at least 1".into()));
    }
    if !(1024..=SNAPSHOT_CHUNK_BYTES_LIMIT).contains(&file.snapshot_chunk_bytes_max) {
        return Err(bad(
            "snapshot_chunk_bytes_max",
            format!("must be between 1024 and {SNAPSHOT_CHUNK_BYTES_LIMIT}"),
        ));
    }
    let auto_compaction =
        parse_auto_compaction(file.auto_compaction_mode, &file.auto_compaction_retention)
            .map_err(|why| bad("auto_compaction_retention", why))?;
    if file.cluster_id == Some(0) {
        return Err(bad("cluster_id", "must not be 0".into()));
    }
    let endpoints: Vec<(NodeId, String)> = file
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| (i as NodeId + 1, e.clone()))
        .collect();
    let node_id = match (args.node_id, &args.endpoint) {
        (Some(id), _) => {
            if id == 0 || id > endpoints.len() as u64 {
                bail!(
                    "--node-id {id} is not a node of {source}: ids run from 1 to {}",
                    endpoints.len()
                );
            }
            id
        }
        (None, Some(ep)) => endpoints
            .iter()
            .find(|(_, e)| e == ep)
            .map(|(id, _)| *id)
            .with_context(|| format!("--endpoint {ep} is not listed in endpoints of {source}"))?,
        (None, None) if endpoints.len() == 1 => 1,
        (None, None) => bail!(
            "{source} lists {} nodes: say which one this is with --node-id or --endpoint",
            endpoints.len()
        ),
    };
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("./data/node-{node_id}")));
    Ok(Settings {
        cluster_id: file
            .cluster_id
            .unwrap_or_else(|| derive_cluster_id(&file.endpoints)),
        source,
        node_id,
        endpoints,
        data_dir,
        tick: Duration::from_millis(file.tick_ms),
        heartbeat_ticks: file.heartbeat_ticks,
        election_ticks: file.election_ticks,
        limits: file.limits,
        snapshot: SnapshotSettings {
            entries_max: file.snapshot_entries_max,
            tail_entries: file.snapshot_tail_entries,
            chunk_bytes_max: file.snapshot_chunk_bytes_max,
        },
        unsafe_stale_reads: file.unsafe_stale_reads,
        unsafe_watch_ignore_gaps: file.unsafe_watch_ignore_gaps,
        auto_compaction,
        watch_progress_notify_interval: Duration::from_millis(
            file.watch_progress_notify_interval_ms,
        ),
    })
}

/// A cluster id from the endpoint list (FNV-1a), so that every node of a
/// cluster derives the same one, and nodes of different clusters differ.
pub fn derive_cluster_id(endpoints: &[String]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in endpoints.join(",").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.max(1)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use clap::Parser;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(std::iter::once("konsen-server").chain(extra.iter().copied()))
    }

    fn write_config(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".yml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn only_setting_variables_are_read_from_the_environment() {
        let vars = [
            ("KONSEN_TICK_MS", "50"),
            ("KONSEN_LIMITS__REQUEST_BYTES_MAX", "1024"),
            ("KONSEN_SIM_SEEDS", "100"),
            ("KONSEN_NODE_ID", "2"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let env = settings_env(vars.into_iter());
        let mut keys: Vec<&str> = env.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["KONSEN_LIMITS__REQUEST_BYTES_MAX", "KONSEN_TICK_MS"]);
    }

    #[test]
    fn reads_three_nodes_and_picks_by_endpoint() {
        let f = write_config("endpoints: [127.0.0.1:10001, 127.0.0.1:10002, 127.0.0.1:10003]\n");
        let path = f.path().to_str().unwrap();
        let s = Settings::load_with_env(
            &args(&["--config", path, "--endpoint", "127.0.0.1:10002"]),
            HashMap::new(),
        )
        .unwrap();
        assert_eq!(s.node_id, 2);
        assert_eq!(s.endpoint(), "127.0.0.1:10002");
        assert_eq!(s.tick, Duration::from_millis(100));
        assert_eq!(s.data_dir, PathBuf::from("./data/node-2"));
        assert_eq!(
            s.cluster_id,
            derive_cluster_id(
                &s.endpoints
                    .iter()
                    .map(|(_, e)| e.clone())
                    .collect::<Vec<_>>()
            )
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let f = write_config("endpoints: [127.0.0.1:1]\ntick_ms: 100\n");
        let path = f.path().to_str().unwrap();
        let env = HashMap::from([
            ("KONSEN_TICK_MS".to_string(), "7".to_string()),
            (
                "KONSEN_LIMITS__REQUEST_BYTES_MAX".to_string(),
                "99".to_string(),
            ),
        ]);
        let s = Settings::load_with_env(&args(&["--config", path]), env).unwrap();
        assert_eq!(s.tick, Duration::from_millis(7));
        assert_eq!(s.limits.request_bytes_max, 99);
    }

    #[test]
    fn auto_compaction_reads_etcd_retentions() {
        use AutoCompactionMode::{Periodic, Revision};
        assert_eq!(
            parse_auto_compaction(Revision, "10000"),
            Ok(AutoCompaction::Revisions(10000))
        );
        assert_eq!(
            parse_auto_compaction(Revision, "0"),
            Ok(AutoCompaction::Off)
        );
        assert!(parse_auto_compaction(Revision, "1h").is_err());
        assert_eq!(
            parse_auto_compaction(Periodic, "1"),
            Ok(AutoCompaction::Periodic(Duration::from_secs(3600)))
        );
        assert_eq!(
            parse_auto_compaction(Periodic, "30m"),
            Ok(AutoCompaction::Periodic(Duration::from_secs(1800)))
        );
        assert!(parse_auto_compaction(Periodic, "5d").is_err());
        let f = write_config("endpoints: [127.0.0.1:1]\nauto_compaction_retention: \"x\"\n");
        let path = f.path().to_str().unwrap();
        let err = Settings::load_with_env(&args(&["--config", path]), HashMap::new()).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("auto_compaction_retention"), "{err}");
    }

    /// Every setting of the file can be set from the environment (the
    /// auto-compaction ones once could not).
    #[test]
    fn auto_compaction_is_read_from_the_environment() {
        let f = write_config("endpoints: [127.0.0.1:1]\n");
        let path = f.path().to_str().unwrap();
        let s = Settings::load_with_env(&args(&["--config", path]), HashMap::new()).unwrap();
        assert!(matches!(
            s.auto_compaction,
            AutoCompaction::Revisions(10000)
        ));
        let vars = [
            ("KONSEN_AUTO_COMPACTION_MODE", "periodic"),
            ("KONSEN_AUTO_COMPACTION_RETENTION", "90s"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let s = Settings::load_with_env(&args(&["--config", path]), settings_env(vars.into_iter()))
            .unwrap();
        assert!(
            matches!(s.auto_compaction, AutoCompaction::Periodic(d) if d == Duration::from_secs(90)),
            "{:?}",
            s.auto_compaction
        );
        let vars = [("KONSEN_AUTO_COMPACTION_RETENTION", "0")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        let s = Settings::load_with_env(&args(&["--config", path]), settings_env(vars.into_iter()))
            .unwrap();
        assert!(matches!(s.auto_compaction, AutoCompaction::Off));
    }

    #[test]
    fn unsafe_stale_reads_is_off_unless_asked_for() {
        let f = write_config("endpoints: [127.0.0.1:1]\n");
        let path = f.path().to_str().unwrap();
        let s = Settings::load_with_env(&args(&["--config", path]), HashMap::new()).unwrap();
        assert!(!s.unsafe_stale_reads);
        let vars =
            [("KONSEN_UNSAFE_STALE_READS", "true")].map(|(k, v)| (k.to_string(), v.to_string()));
        let env = settings_env(vars.into_iter());
        let s = Settings::load_with_env(&args(&["--config", path]), env).unwrap();
        assert!(s.unsafe_stale_reads);
        let f = write_config("endpoints: [127.0.0.1:1]\nunsafe_stale_reads: true\n");
        let path = f.path().to_str().unwrap();
        let s = Settings::load_with_env(&args(&["--config", path]), HashMap::new()).unwrap();
        assert!(s.unsafe_stale_reads);
    }

    #[test]
    fn bad_settings_name_the_field_and_file() {
        let f = write_config("endpoints: [127.0.0.1:1]\nelection_ticks: 1\n");
        let path = f.path().to_str().unwrap();
        let err = Settings::load_with_env(&args(&["--config", path]), HashMap::new()).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("election_ticks") && text.contains(path),
            "{text}"
        );

        let f = write_config("endpoints: [127.0.0.1:1]\ntick_msec: 5\n");
        let path = f.path().to_str().unwrap();
        let err = Settings::load_with_env(&args(&["--config", path]), HashMap::new()).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("tick_msec") && text.contains(path), "{text}");
    }

    #[test]
    fn several_nodes_need_a_node_id() {
        let f = write_config("endpoints: [a:1, b:2]\n");
        let path = f.path().to_str().unwrap();
        assert!(Settings::load_with_env(&args(&["--config", path]), HashMap::new()).is_err());
        assert!(
            Settings::load_with_env(&args(&["--config", path, "--node-id", "3"]), HashMap::new())
                .is_err()
        );
    }
}
