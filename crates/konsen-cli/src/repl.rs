//! The interactive prompt (`konsen-cli` with no command), like the seed's:
//!
//! ```text
//! » set name=Lizhao Liu
//! OK
//! » get name
//! Lizhao Liu
//! ```
//!
//! Line editing and history come from rustyline; history is kept in
//! `~/.konsen_history`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::client::Cluster;
use crate::commands::{self, Format};

const PROMPT: &str = "» ";
const HELP: &str = "commands:
  set KEY=VALUE | set KEY VALUE   write a key
  get KEY [--prefix] [--serializable]
  del KEY [--prefix]
  status                          every endpoint's role, term and indexes
  leader                          the leader's endpoint
  help | exit";

pub async fn run(cluster: &mut Cluster, format: Format) -> Result<()> {
    let mut editor = DefaultEditor::new().context("starting the line editor")?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".konsen_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    loop {
        let line = match editor.readline(PROMPT) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading the prompt"),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        if matches!(line, "exit" | "quit") {
            break;
        }
        match execute(cluster, line, format).await {
            Ok(out) if out.is_empty() => {}
            Ok(out) => println!("{out}"),
            Err(e) => eprintln!("error: {e}"),
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

async fn execute(cluster: &mut Cluster, line: &str, format: Format) -> Result<String, String> {
    let (command, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let words: Vec<&str> = rest.split_whitespace().collect();
    let flag = |name: &str| words.contains(&name);
    let key = words.iter().find(|w| !w.starts_with("--")).copied();
    let result = match command {
        "set" => {
            let (key, value) = match rest.split_once('=') {
                Some((k, v)) if !k.trim().contains(char::is_whitespace) => (k.trim(), v),
                _ => rest
                    .split_once(char::is_whitespace)
                    .ok_or("usage: set KEY=VALUE")?,
            };
            commands::set(cluster, key, value.trim(), format).await
        }
        "get" => {
            let key = key.ok_or("usage: get KEY [--prefix] [--serializable]")?;
            commands::get(
                cluster,
                key,
                flag("--prefix"),
                flag("--serializable"),
                format,
            )
            .await
        }
        "del" => {
            let key = key.ok_or("usage: del KEY [--prefix]")?;
            commands::del(cluster, key, flag("--prefix"), format).await
        }
        "status" => commands::status(cluster, format).await,
        "leader" => commands::leader(cluster, format).await,
        "help" => return Ok(HELP.to_string()),
        other => return Err(format!("unknown command {other:?}; try help")),
    };
    result.map_err(|e| e.to_string())
}
