//! `cargo xtask dist`: one folder per node of the cluster file, ready to
//! copy to that node's machine.
//!
//! ```text
//! output/
//!   node_0/            node 1 (the first endpoint)
//!     konsen-server    the node binary
//!     konsen-cli       the client
//!     konsen.yml       the cluster file, as written, with a header naming the node
//!     bootstrap.sh     starts the node by hand, data in ./data
//!     konsen.service   systemd unit, for an install in --install-dir
//!     README.md        the operator's guide (deploy/README.md)
//!   node_1/ ...
//! ```
//!
//! Folders count from 0 as the seed's did; node ids count from 1, as in the
//! cluster file. The server takes the node's id and data directory as flags
//! (`--node-id`, `--data-dir`), so `konsen.yml` is the same on every node
//! but for its header.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

use crate::cargo::{self, Binaries};
use crate::cluster_file::ClusterFile;

/// The systemd unit template, with `{{field}}` placeholders.
const UNIT_TEMPLATE: &str = include_str!("../../deploy/systemd/konsen.service");
/// The operator's guide, shipped in every folder.
const GUIDE: &str = include_str!("../../deploy/README.md");

/// Where the unit expects a node folder's files on its machine.
pub const INSTALL_DIR_DEFAULT: &str = "/opt/konsen";

/// What `cargo xtask dist` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cluster file.
    pub config: PathBuf,
    /// Where the node folders go.
    pub out: PathBuf,
    /// Take the binaries from here instead of building them.
    pub bin_dir: Option<PathBuf>,
    /// Where the folder's files will live on each machine.
    pub install_dir: String,
}

/// Builds (unless given binaries) and writes every node's folder.
pub fn run(options: &Options) -> Result<()> {
    let cluster = ClusterFile::load(&options.config)?;
    let install_dir = check_install_dir(&options.install_dir)?;
    println!(
        "[dist] {}: {} nodes: {}",
        cluster.path.display(),
        cluster.endpoints.len(),
        cluster.endpoints.join(", ")
    );
    let binaries = Binaries::prebuilt_or_build(options.bin_dir.as_deref())?;
    write_all(&cluster, &binaries, &options.out, install_dir)?;
    println!(
        "[dist] done. Try one node by hand: {}/bootstrap.sh; install on machines: deploy/README.md",
        options.out.join(node_folder_name(0)).display()
    );
    Ok(())
}

/// `--install-dir` as the unit's paths need it: absolute, without spaces
/// (systemd splits ExecStart= on them), without a trailing slash.
fn check_install_dir(install_dir: &str) -> Result<&str> {
    ensure!(
        install_dir.starts_with('/') && !install_dir.contains(char::is_whitespace),
        "--install-dir {install_dir:?} must be an absolute path without spaces"
    );
    let trimmed = install_dir.trim_end_matches('/');
    ensure!(
        !trimmed.is_empty(),
        "--install-dir / would install konsen into the root directory"
    );
    Ok(trimmed)
}

/// The folder of the node at position `index` (id `index + 1`).
pub fn node_folder_name(index: usize) -> String {
    format!("node_{index}")
}

/// Writes one folder per node of `cluster` into `out`.
pub fn write_all(
    cluster: &ClusterFile,
    binaries: &Binaries,
    out: &Path,
    install_dir: &str,
) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    warn_about_stale_folders(out, cluster.endpoints.len())?;
    let total = cluster.endpoints.len();
    // The first folder gets copies of the built binaries (a later build
    // must not change a folder already made); the others hard links to
    // those copies, so N nodes cost the disk space of one.
    let first = out.join(node_folder_name(0));
    for (index, endpoint) in cluster.endpoints.iter().enumerate() {
        let node_id = index as u64 + 1;
        let dir = out.join(node_folder_name(index));
        println!(
            "[dist] node {node_id}/{total} ({endpoint}) -> {}",
            dir.display()
        );
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (server, cli, link) = if index == 0 {
            (binaries.server.clone(), binaries.cli.clone(), false)
        } else {
            (
                first.join(cargo::BINARIES[0]),
                first.join(cargo::BINARIES[1]),
                true,
            )
        };
        install_binary(&server, &dir.join(cargo::BINARIES[0]), link)?;
        install_binary(&cli, &dir.join(cargo::BINARIES[1]), link)?;
        let node = Node {
            id: node_id,
            total,
            endpoint,
        };
        write_file(&dir.join("konsen.yml"), &node.config(cluster), 0o644)?;
        write_file(&dir.join("bootstrap.sh"), &node.bootstrap(), 0o755)?;
        write_file(&dir.join("konsen.service"), &node.unit(install_dir), 0o644)?;
        write_file(&dir.join("README.md"), GUIDE, 0o644)?;
    }
    Ok(())
}

/// One node, for rendering its files.
#[derive(Debug)]
struct Node<'a> {
    id: u64,
    total: usize,
    endpoint: &'a str,
}

impl Node<'_> {
    /// `konsen.yml`: the cluster file as written, under a header that says
    /// which node this folder is and how it is started.
    fn config(&self, cluster: &ClusterFile) -> String {
        format!(
            "# konsen node {id} of {total} ({endpoint}), generated by `cargo xtask dist`\n\
             # from {source}.\n\
             # Every node gets the same settings; this node's id and data directory\n\
             # are flags (bootstrap.sh and konsen.service pass them):\n\
             #   konsen-server --config konsen.yml --node-id {id} --data-dir DIR\n\n{text}",
            id = self.id,
            total = self.total,
            endpoint = self.endpoint,
            source = cluster.path.display(),
            text = cluster.text,
        )
    }

    /// `bootstrap.sh`: runs the node in the foreground from its folder.
    fn bootstrap(&self) -> String {
        format!(
            "#!/bin/sh\n\
             # Starts konsen node {id} of {total} ({endpoint}) in the foreground, its data\n\
             # in ./data beside this script. Generated by `cargo xtask dist`. Extra\n\
             # arguments go to konsen-server (e.g. --log-format json). Stop: Ctrl-C.\n\
             set -eu\n\
             cd \"$(dirname \"$0\")\"\n\
             exec ./konsen-server --config ./konsen.yml --node-id {id} --data-dir ./data \"$@\"\n",
            id = self.id,
            total = self.total,
            endpoint = self.endpoint,
        )
    }

    /// `konsen.service`: the unit template filled in for this node, its
    /// files in `install_dir` (checked by [`check_install_dir`]).
    fn unit(&self, install_dir: &str) -> String {
        let unit = UNIT_TEMPLATE
            .replace("{{node_id}}", &self.id.to_string())
            .replace("{{cluster_size}}", &self.total.to_string())
            .replace("{{endpoint}}", self.endpoint)
            .replace("{{install_dir}}", install_dir);
        assert!(
            !unit.contains("{{"),
            "unit template invariant: every {{{{field}}}} of deploy/systemd/konsen.service is filled in"
        );
        unit
    }
}

/// Puts `from` at `to`: a copy, or with `link` a hard link when both are on
/// one file system. An old file at `to` is unlinked first, so a binary that
/// is running from the folder is not overwritten under it.
fn install_binary(from: &Path, to: &Path, link: bool) -> Result<()> {
    if to.exists() {
        fs::remove_file(to).with_context(|| format!("removing the old {}", to.display()))?;
    }
    if !link || fs::hard_link(from, to).is_err() {
        fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", to.display()))
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Node folders left in `out` by a larger cluster are not this cluster's:
/// say so, but leave them (they may hold a node's data).
fn warn_about_stale_folders(out: &Path, nodes: usize) -> Result<()> {
    for entry in fs::read_dir(out).with_context(|| format!("listing {}", out.display()))? {
        let name = entry
            .with_context(|| format!("listing {}", out.display()))?
            .file_name();
        let index = name
            .to_str()
            .and_then(|n| n.strip_prefix("node_"))
            .and_then(|i| i.parse::<usize>().ok());
        if let Some(index) = index.filter(|i| *i >= nodes) {
            println!(
                "[dist] warning: {} is not a node of this {nodes}-node cluster; left as it is",
                out.join(node_folder_name(index)).display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node<'static> {
        Node {
            id: 2,
            total: 3,
            endpoint: "10.0.0.2:2379",
        }
    }

    #[test]
    fn unit_is_filled_in_for_the_node() {
        let unit = node().unit(check_install_dir("/opt/konsen/").unwrap());
        assert!(unit.contains(
            "ExecStart=/opt/konsen/konsen-server --config /opt/konsen/konsen.yml --node-id 2 --data-dir /var/lib/konsen"
        ));
        assert!(unit.contains("Description=konsen node 2 (10.0.0.2:2379)"));
        for line in [
            "Type=notify",
            "Restart=on-failure",
            "DynamicUser=yes",
            "StateDirectory=konsen",
        ] {
            assert!(unit.lines().any(|l| l == line), "{line} missing");
        }
    }

    #[test]
    fn install_dir_must_be_absolute_without_spaces() {
        assert!(check_install_dir("opt/konsen").is_err());
        assert!(check_install_dir("/opt/my konsen").is_err());
        assert!(check_install_dir("/").is_err());
        assert_eq!(check_install_dir("/srv/konsen").unwrap(), "/srv/konsen");
    }

    #[test]
    fn bootstrap_starts_this_node_from_its_folder() {
        let script = node().bootstrap();
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("cd \"$(dirname \"$0\")\""));
        assert!(script.contains(
            "exec ./konsen-server --config ./konsen.yml --node-id 2 --data-dir ./data \"$@\"\n"
        ));
    }
}
