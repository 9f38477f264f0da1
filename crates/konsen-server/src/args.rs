//! Command-line flags of `konsen-server`. Each also reads a `KONSEN_*`
//! environment variable; a flag given on the command line wins.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// A konsen node: a member of a Raft-replicated key-value store that
/// speaks the etcd v3 API.
#[derive(Debug, Parser)]
#[command(name = "konsen-server", version)]
pub struct Args {
    /// Cluster configuration (YAML). Default: conf/cluster.yml if present,
    /// else a single node on 127.0.0.1:2379.
    #[arg(long, env = "KONSEN_CONFIG")]
    pub config: Option<PathBuf>,

    /// This node's id: its position (from 1) in the `endpoints` list.
    #[arg(long, env = "KONSEN_NODE_ID", conflicts_with = "endpoint")]
    pub node_id: Option<u64>,

    /// This node's endpoint, as written in the `endpoints` list (instead of
    /// --node-id).
    #[arg(long, env = "KONSEN_ENDPOINT")]
    pub endpoint: Option<String>,

    /// Where this node keeps its data. Default: ./data/node-N.
    #[arg(long, env = "KONSEN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Log line format.
    #[arg(long, env = "KONSEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The environment variables that belong to the flags above, and so are
/// not cluster settings (see `settings.rs`).
pub const FLAG_ENV_VARS: &[&str] = &[
    "KONSEN_CONFIG",
    "KONSEN_NODE_ID",
    "KONSEN_ENDPOINT",
    "KONSEN_DATA_DIR",
    "KONSEN_LOG_FORMAT",
    "KONSEN_LOG",
];
