//! `konsen-cli`: a client for konsen (or any etcd v3 cluster).
//!
//! ```text
//! konsen-cli [--endpoints A,B,C | --config conf/cluster.yml] set KEY VALUE
//! konsen-cli get KEY [--prefix] [--serializable]
//! konsen-cli del KEY [--prefix]
//! konsen-cli status | leader
//! konsen-cli                      # interactive prompt
//! ```
//!
//! It speaks only the etcd API and finds the leader itself. Exit codes:
//! 0 success, 1 request refused or other error, 2 usage, 3 no leader,
//! 4 no endpoint reachable, 5 deadline passed.
//!
//! # Layout
//!
//! * `client.rs`: finding the leader, retrying, error kinds.
//! * `commands.rs`: the commands; `output.rs`: tables and JSON.
//! * `repl.rs`: the interactive prompt.

mod client;
mod commands;
mod output;
mod repl;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::client::{CliError, Cluster};
use crate::commands::Format;

const DEFAULT_CONFIG: &str = "conf/cluster.yml";
const DEFAULT_ENDPOINT: &str = "127.0.0.1:2379";

#[derive(Debug, Parser)]
#[command(
    name = "konsen-cli",
    version,
    about = "Talks to a konsen cluster through the etcd v3 API"
)]
struct Args {
    /// Comma-separated host:port list.
    #[arg(long, value_delimiter = ',', global = true, env = "KONSEN_ENDPOINTS")]
    endpoints: Vec<String>,
    /// Read the endpoints from a konsen cluster file. Default:
    /// conf/cluster.yml if present, else 127.0.0.1:2379.
    #[arg(long, global = true, conflicts_with = "endpoints")]
    config: Option<PathBuf>,
    /// How long to keep trying (leader changes, no leader), e.g. 5s, 500ms.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    deadline: Duration,
    /// Output format.
    #[arg(long, short = 'w', global = true, value_enum, default_value_t = Format::Table)]
    write_out: Format,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes KEY.
    Set { key: String, value: String },
    /// Reads KEY (or every key starting with it).
    Get {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Read from one node's local state, without asking the leader.
        #[arg(long)]
        serializable: bool,
    },
    /// Deletes KEY (or every key starting with it); prints how many.
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
    /// Every endpoint's role, term, leader, indexes and data size.
    Status,
    /// The leader's endpoint.
    Leader,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(secs) = s.strip_suffix('s') {
        (secs, 1000)
    } else {
        (s, 1000)
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 5s or 500ms"))?;
    Ok(Duration::from_millis(n * scale))
}

/// The endpoints of a konsen cluster file (its `endpoints:` list).
fn endpoints_from_config(path: &Path) -> Result<Vec<String>> {
    let endpoints: Vec<String> = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.get("endpoints"))
        .with_context(|| format!("reading the endpoints of {}", path.display()))?;
    if endpoints.is_empty() {
        bail!("{}: no endpoints listed", path.display());
    }
    Ok(endpoints)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e.downcast_ref::<CliError>().map_or(1, CliError::exit_code);
            ExitCode::from(code)
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let endpoints = if !args.endpoints.is_empty() {
        args.endpoints
    } else if let Some(path) = &args.config {
        endpoints_from_config(path)?
    } else if Path::new(DEFAULT_CONFIG).exists() {
        endpoints_from_config(Path::new(DEFAULT_CONFIG))?
    } else {
        vec![DEFAULT_ENDPOINT.to_string()]
    };
    let mut cluster = Cluster::new(endpoints, args.deadline);
    let format = args.write_out;
    let out = match args.command {
        None => return repl::run(&mut cluster, format).await,
        Some(Command::Set { key, value }) => {
            commands::set(&mut cluster, &key, &value, format).await?
        }
        Some(Command::Get {
            key,
            prefix,
            serializable,
        }) => commands::get(&mut cluster, &key, prefix, serializable, format).await?,
        Some(Command::Del { key, prefix }) => {
            commands::del(&mut cluster, &key, prefix, format).await?
        }
        Some(Command::Status) => commands::status(&mut cluster, format).await?,
        Some(Command::Leader) => commands::leader(&mut cluster, format).await?,
    };
    if !out.is_empty() {
        println!("{out}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn endpoints_come_from_the_cluster_file() {
        let dir = std::env::temp_dir().join(format!("konsen-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.yml");
        std::fs::write(
            &path,
            "# c\nendpoints:\n  - 127.0.0.1:1\n  - 127.0.0.1:2 # two\ntick_ms: 5\n",
        )
        .unwrap();
        assert_eq!(
            endpoints_from_config(&path).unwrap(),
            vec!["127.0.0.1:1", "127.0.0.1:2"]
        );
        std::fs::write(&path, "endpoints: [a:1, b:2]\n").unwrap();
        assert_eq!(endpoints_from_config(&path).unwrap(), vec!["a:1", "b:2"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
