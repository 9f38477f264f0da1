//! Running cargo from xtask: the workspace root, the target directory (as
//! cargo resolves it, so the caller's `CARGO_TARGET_DIR` is respected), and
//! the release build of the two binaries a node folder ships.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The binaries every node folder carries.
pub const BINARIES: [&str; 2] = ["konsen-server", "konsen-cli"];

/// Paths of built `konsen-server` and `konsen-cli`.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub server: PathBuf,
    pub cli: PathBuf,
}

impl Binaries {
    /// The binaries in `dir`, which must both be there.
    pub fn in_dir(dir: &Path) -> Result<Binaries> {
        let found = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            if !path.is_file() {
                bail!("{} not found (looked in {})", name, dir.display());
            }
            Ok(path)
        };
        Ok(Binaries {
            server: found(BINARIES[0])?,
            cli: found(BINARIES[1])?,
        })
    }

    /// Builds the workspace in release mode, streaming cargo's output, and
    /// returns the binaries it made.
    pub fn build() -> Result<Binaries> {
        // `--workspace` rather than `-p konsen-server -p konsen-cli`: the
        // same feature set as every other release build, so the cached
        // RocksDB build is reused instead of compiled again.
        let args = ["build", "--release", "--workspace"];
        println!("[xtask] building: cargo {}", args.join(" "));
        run(&args, &[])?;
        let dir = target_dir()?.join("release");
        Binaries::in_dir(&dir).context("after a successful cargo build")
    }

    /// The prebuilt binaries in `bin_dir`, or a fresh release build.
    pub fn prebuilt_or_build(bin_dir: Option<&Path>) -> Result<Binaries> {
        match bin_dir {
            Some(dir) => {
                let binaries = Binaries::in_dir(dir).context("--bin-dir")?;
                println!("[xtask] using prebuilt binaries in {}", dir.display());
                Ok(binaries)
            }
            None => Binaries::build(),
        }
    }
}

/// The workspace root (where `Cargo.toml`, `conf/` and `deploy/` are).
pub fn workspace_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A cargo command run from the workspace root, with the cargo that runs
/// xtask when there is one.
fn cargo() -> (String, Command) {
    let program = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&program);
    cmd.current_dir(workspace_root());
    (program, cmd)
}

/// Runs cargo with `args` and extra environment `env`, its output going to
/// ours; fails if cargo fails.
pub fn run(args: &[&str], env: &[(&str, String)]) -> Result<()> {
    let (program, mut cmd) = cargo();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let shown = format!("{program} {}", args.join(" "));
    let status = cmd.status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// The target directory, as `cargo metadata` reports it: this honours
/// `CARGO_TARGET_DIR`, `.cargo/config.toml` and the default alike.
pub fn target_dir() -> Result<PathBuf> {
    let (program, mut cmd) = cargo();
    let output = cmd
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .with_context(|| format!("running {program} metadata"))?;
    if !output.status.success() {
        bail!(
            "{program} metadata failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading cargo metadata's output")?;
    let dir = metadata["target_directory"]
        .as_str()
        .context("cargo metadata's output has no target_directory")?;
    Ok(PathBuf::from(dir))
}
