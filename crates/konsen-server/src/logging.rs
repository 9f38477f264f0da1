//! Log output: human-readable lines by default, JSON with
//! `--log-format json`. `KONSEN_LOG` (an `EnvFilter` directive such as
//! `debug` or `konsen_server=debug`) picks what is logged; default `info`.

use tracing_subscriber::EnvFilter;

use crate::args::LogFormat;

/// Installs the global subscriber, writing to stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("KONSEN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}
