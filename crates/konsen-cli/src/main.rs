//! `konsen-cli`: a client for konsen (or any etcd v3 cluster).
//!
//! ```text
//! konsen-cli [--endpoints A,B,C | --config conf/cluster.yml] set KEY VALUE
//! konsen-cli get KEY [--prefix] [--serializable]
//! konsen-cli del KEY [--prefix]
//! konsen-cli cas KEY EXPECTED NEW | cas --create KEY NEW
//! konsen-cli txn < compares-and-requests   # etcdctl's `txn -i` syntax
//! konsen-cli status | leader
//! konsen-cli watch KEY [--prefix] [--rev N]   # until Ctrl-C
//! konsen-cli                      # interactive prompt
//! ```
//!
//! It speaks only the etcd API and finds the leader itself. Exit codes:
//! 0 success, 1 request refused or other error, 2 usage (also a `txn`
//! line that does not parse), 3 no leader, 4 no endpoint reachable,
//! 5 deadline passed, 6 a transaction's compares failed (`cas`, `txn`).
//!
//! # Layout
//!
//! * `client.rs`: finding the leader, retrying, error kinds.
//! * `commands.rs`: the commands; `output.rs`: tables and JSON.
//! * `txn.rs`: `txn` and `cas`; `txn_input.rs` parses etcdctl's text form
//!   of a transaction, with `quoting.rs`.
//! * `watch.rs`: `watch`, resumed on another node if one fails.
//! * `repl.rs`: the interactive prompt.

mod client;
mod commands;
mod output;
mod quoting;
mod repl;
mod txn;
mod txn_input;
mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::client::{CliError, Cluster};
use crate::commands::Format;

const DEFAULT_CONFIG: &str = "conf/cluster.yml";
const DEFAULT_ENDPOINT: &str = "127.0.0.1:2379";
const EXIT_CODES: &str = "\
Exit codes: 0 success, 1 request refused or other error, 2 usage, 3 no leader,
4 no endpoint reachable, 5 deadline passed, 6 compare failed (cas, txn).";

#[derive(Debug, Parser)]
#[command(
    name = "konsen-cli",
    version,
    about = "Talks to a konsen cluster through the etcd v3 API",
    after_help = EXIT_CODES
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
    /// Writes NEW to KEY if KEY holds EXPECTED (--create: if KEY is missing);
    /// else prints KEY's value and exits 6.
    #[command(
        long_about = txn::CAS_HELP,
        override_usage = "konsen-cli cas KEY EXPECTED NEW\n       konsen-cli cas --create KEY NEW",
        after_help = EXIT_CODES
    )]
    Cas {
        /// The key to swap.
        key: String,
        /// The value KEY must hold; with --create, NEW.
        #[arg(value_name = "EXPECTED")]
        expected: String,
        /// The value to write.
        #[arg(value_name = "NEW")]
        new: Option<String>,
        /// Write only if KEY does not exist (compare its create revision
        /// with 0) instead of comparing its value.
        #[arg(long)]
        create: bool,
    },
    /// Runs a transaction read from stdin (etcdctl's `txn -i` syntax);
    /// exits 6 if its compares failed.
    #[command(long_about = txn::TXN_HELP, after_help = EXIT_CODES)]
    Txn {
        /// Prompt for each block even when stdin is not a terminal.
        #[arg(long, short = 'i')]
        interactive: bool,
    },
    /// Every endpoint's role, term, leader, indexes and data size.
    Status,
    /// The leader's endpoint.
    Leader,
    /// Prints the events of KEY (or of every key starting with it) as
    /// they happen, until Ctrl-C; any node serves it.
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Start at this revision (replaying the history from it); 0: from
        /// now on.
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
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
        Some(Command::Cas {
            key,
            expected,
            new,
            create,
        }) => {
            let (expected, new) = cas_values(&expected, new.as_deref(), create)?;
            return finish(txn::cas(&mut cluster, &key, expected, new, format).await?);
        }
        Some(Command::Txn { interactive }) => {
            let request = txn::read_stdin(interactive)?;
            return finish(txn::txn(&mut cluster, request, format).await?);
        }
        Some(Command::Status) => commands::status(&mut cluster, format).await?,
        Some(Command::Leader) => commands::leader(&mut cluster, format).await?,
        Some(Command::Watch { key, prefix, rev }) => {
            return Ok(watch::watch(&cluster, &key, prefix, rev, format).await?);
        }
    };
    if !out.is_empty() {
        println!("{out}");
    }
    Ok(())
}

/// EXPECTED and NEW of `cas` from its two values; with `--create`, its one
/// value is NEW and there is no EXPECTED.
fn cas_values<'a>(
    first: &'a str,
    second: Option<&'a str>,
    create: bool,
) -> Result<(Option<&'a str>, &'a str), CliError> {
    match (second, create) {
        (Some(new), false) => Ok((Some(first), new)),
        (None, true) => Ok((None, first)),
        (None, false) => Err(CliError::Usage(
            "cas takes KEY EXPECTED NEW (or --create KEY NEW)".to_string(),
        )),
        (Some(_), true) => Err(CliError::Usage(
            "cas --create takes KEY NEW, no EXPECTED".to_string(),
        )),
    }
}

/// Prints what a transaction printed; fails (exit 6) if its compares did.
fn finish(answer: txn::Answer) -> Result<()> {
    if !answer.out.is_empty() {
        println!("{}", answer.out);
    }
    match answer.failed {
        Some(why) => Err(CliError::CompareFailed(why).into()),
        None => Ok(()),
    }
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
    fn cas_takes_expected_unless_creating() {
        assert_eq!(cas_values("a", Some("b"), false).unwrap(), (Some("a"), "b"));
        assert_eq!(cas_values("b", None, true).unwrap(), (None, "b"));
        for (second, create) in [(None, false), (Some("b"), true)] {
            let e = cas_values("a", second, create).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
        }
    }

    #[test]
    fn cas_and_txn_parse_from_the_command_line() {
        let args = Args::try_parse_from(["konsen-cli", "cas", "k", "old", "new"]).unwrap();
        assert!(matches!(
            args.command,
            Some(Command::Cas { ref key, ref expected, new: Some(ref new), create: false })
                if key == "k" && expected == "old" && new == "new"
        ));
        let args = Args::try_parse_from(["konsen-cli", "cas", "--create", "k", "new"]).unwrap();
        assert!(matches!(
            args.command,
            Some(Command::Cas { ref expected, new: None, create: true, .. }) if expected == "new"
        ));
        assert!(Args::try_parse_from(["konsen-cli", "cas", "k"]).is_err());
        assert!(Args::try_parse_from(["konsen-cli", "cas", "k", "a", "b", "c"]).is_err());
        let args = Args::try_parse_from(["konsen-cli", "-w", "json", "txn", "-i"]).unwrap();
        assert!(matches!(
            args.command,
            Some(Command::Txn { interactive: true })
        ));
        assert_eq!(args.write_out, Format::Json);
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
