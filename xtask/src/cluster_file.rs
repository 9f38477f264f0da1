//! The cluster file (`conf/cluster.yml`) as xtask sees it: its text, kept
//! verbatim so every generated node config carries the operator's comments,
//! and its `endpoints:` list, checked before anything is generated.
//!
//! xtask checks only what it needs to lay out nodes: at least one endpoint,
//! no endpoint twice, every endpoint `host:port`. The other settings (ticks,
//! limits) are the server's to check when a node starts; xtask does not keep
//! a second copy of those rules.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use config::{File, FileFormat};
use serde::Deserialize;

/// A checked cluster file.
#[derive(Debug, Clone)]
pub struct ClusterFile {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    /// The file as written.
    pub text: String,
    /// `host:port` of every node; node id i is position i, from 1.
    pub endpoints: Vec<String>,
}

/// The part of the file xtask reads. Other fields are allowed and left to
/// the server.
#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(default)]
    endpoints: Option<Vec<String>>,
}

impl ClusterFile {
    /// Reads and checks the cluster file at `path`.
    pub fn load(path: &Path) -> Result<ClusterFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the cluster file {}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Checks `text`, read from `path` (named in every error).
    pub fn parse(path: &Path, text: &str) -> Result<ClusterFile> {
        let shown = path.display();
        let raw: Raw = config::Config::builder()
            .add_source(File::from_str(text, FileFormat::Yaml))
            .build()
            .and_then(|c| c.try_deserialize())
            .with_context(|| format!("{shown}: not a valid cluster file"))?;
        let endpoints = raw.endpoints.unwrap_or_default();
        if endpoints.is_empty() {
            bail!("{shown}: no endpoints: `endpoints:` must list one host:port per node");
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            let node = i + 1;
            check_endpoint(endpoint).with_context(|| {
                format!("{shown}: endpoint of node {node} ({endpoint:?}) is not a valid host:port")
            })?;
            if let Some(first) = seen.insert(endpoint.to_ascii_lowercase(), node) {
                bail!(
                    "{shown}: duplicate endpoint {endpoint}: listed for node {first} and node {node}"
                );
            }
        }
        Ok(ClusterFile {
            path: path.to_path_buf(),
            text: text.to_string(),
            endpoints,
        })
    }

    /// The text of a cluster file listing `endpoints` with the server's
    /// default settings, for clusters xtask makes up (`cargo xtask local`).
    pub fn render(endpoints: &[String]) -> String {
        let mut text = String::from(
            "# A konsen cluster made by cargo xtask: one endpoint per node; node\n\
             # ids are positions in the list, from 1.\n\
             endpoints:\n",
        );
        for e in endpoints {
            text.push_str(&format!("  - {e}\n"));
        }
        text
    }
}

/// Checks that `endpoint` is `host:port`: an IPv4 address, a bracketed IPv6
/// address or a DNS name, then a port from 1 to 65535.
fn check_endpoint(endpoint: &str) -> Result<()> {
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        bail!("no port: write it as host:port, e.g. 10.0.0.1:2379");
    };
    if host.is_empty() {
        bail!("no host before the port");
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if inner.parse::<Ipv6Addr>().is_err() {
            bail!("bad IPv6 address {inner:?}");
        }
    } else if host.contains(':') || host.contains('[') {
        bail!("bad address {host:?}: IPv6 addresses are written in brackets, e.g. [::1]:2379");
    } else if host.parse::<Ipv4Addr>().is_err() {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let all_digits = host.chars().all(|c| c.is_ascii_digit() || c == '.');
        if all_digits || host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
            bail!("bad host name {host:?}");
        }
    }
    port_not_zero(port)
}

fn port_not_zero(port: &str) -> Result<()> {
    match port.parse::<u16>() {
        Ok(0) => bail!("port 0 is not a port a node can be reached on"),
        Ok(_) => Ok(()),
        Err(_) => bail!("bad port {port:?}: must be a number from 1 to 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterFile> {
        ClusterFile::parse(Path::new("conf/test.yml"), text)
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).expect_err("the file should be refused"))
    }

    #[test]
    fn reads_endpoints_in_order_and_keeps_the_text() {
        let text = "# comment\nendpoints:\n  - 127.0.0.1:10001\n  - node2.example:10002\n  - \"[::1]:10003\"\ntick_ms: 50\n";
        let file = parse(text).unwrap();
        assert_eq!(
            file.endpoints,
            ["127.0.0.1:10001", "node2.example:10002", "[::1]:10003"]
        );
        assert_eq!(file.text, text);
    }

    #[test]
    fn no_endpoints_is_an_error_naming_the_file() {
        for text in ["tick_ms: 5\n", "endpoints: []\n", "endpoints:\n"] {
            let e = error(text);
            assert!(
                e.contains("conf/test.yml") && e.contains("no endpoints"),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn duplicate_endpoints_are_an_error_naming_both_nodes() {
        let e = error("endpoints: [127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:1]\n");
        assert!(e.contains("conf/test.yml"), "{e}");
        assert!(e.contains("duplicate endpoint 127.0.0.1:1"), "{e}");
        assert!(e.contains("node 1 and node 3"), "{e}");
    }

    #[test]
    fn unparsable_addresses_are_errors_naming_the_address() {
        for (endpoint, why) in [
            ("127.0.0.1", "no port"),
            ("127.0.0.1:http", "bad port"),
            ("127.0.0.1:70000", "bad port"),
            ("127.0.0.1:0", "port 0"),
            (":10001", "no host"),
            ("::1:10001", "IPv6"),
            ("bad_host!:10001", "bad host name"),
            ("300.1.1.1:10001", "bad host name"),
            ("[::zz]:10001", "bad IPv6"),
        ] {
            let e = error(&format!("endpoints: [\"127.0.0.1:5\", \"{endpoint}\"]\n"));
            assert!(e.contains("conf/test.yml"), "{endpoint}: {e}");
            assert!(
                e.contains(&format!("node 2 ({endpoint:?})")),
                "{endpoint}: {e}"
            );
            assert!(e.contains(why), "{endpoint}: {e}");
        }
    }

    #[test]
    fn not_yaml_is_an_error_naming_the_file() {
        let e = error("endpoints: [unclosed\n");
        assert!(e.contains("conf/test.yml"), "{e}");
    }

    #[test]
    fn rendered_files_read_back() {
        let endpoints = vec!["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()];
        assert_eq!(
            parse(&ClusterFile::render(&endpoints)).unwrap().endpoints,
            endpoints
        );
    }
}
