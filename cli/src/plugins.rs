//! `zedops-<name>` CLI plugins, the docker/kubectl/git model (`docs/plugins.md`): an executable
//! `zedops-<name>` in `$XDG_DATA_HOME/zedops/plugins` or on `PATH` becomes `zedops <name> …`.
//! Built-in commands are never shadowed; a plugin must answer `zedops-plugin-metadata` with its
//! metadata before it is listed as usable or run; it runs with the resolved client settings in its
//! environment.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::args::{ClientOpts, Output};
use crate::exit::{self, Exit};

/// The argument a plugin answers with its metadata.
pub const METADATA_ARG: &str = "zedops-plugin-metadata";
/// How long a plugin may take to print its metadata, and how much it may print.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
const METADATA_MAX_BYTES: u64 = 64 * 1024;

/// What a plugin prints for [`METADATA_ARG`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub schema_version: u32,
    pub description: String,
    pub version: String,
}

/// A plugin found on disk, and whether it can be used.
#[derive(Debug, Clone, Serialize)]
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    #[serde(flatten)]
    pub metadata: Option<Metadata>,
    /// `ok`, `shadowed` (a built-in command has its name) or `broken`.
    pub status: &'static str,
    /// Why it is broken or shadowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// True for names a plugin may have: `^[a-z][a-z0-9-]*$`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Where plugins are looked for, first match wins: the plugins dir, then `PATH` in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![crate::paths::data_dir().join("plugins")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// Every plugin in `dirs` (each name once, the first found), sorted by name, without their
/// metadata read yet.
pub fn find_all(dirs: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut found = std::collections::BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let file = e.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_prefix("zedops-")) else {
                continue;
            };
            if valid_name(name) && !found.contains_key(name) && is_executable(&e.path()) {
                found.insert(name.to_owned(), e.path());
            }
        }
    }
    found.into_iter().collect()
}

/// The plugin `name` in `dirs`, if any.
pub fn find(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    if !valid_name(name) {
        return None;
    }
    dirs.iter()
        .map(|d| d.join(format!("zedops-{name}")))
        .find(|p| is_executable(p))
}

/// Why a plugin is broken.
#[derive(Debug, thiserror::Error)]
pub enum Broken {
    #[error("cannot run it: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("it did not answer {METADATA_ARG} within {METADATA_TIMEOUT:?}")]
    Timeout,
    #[error("{METADATA_ARG} exited with {0}")]
    Failed(std::process::ExitStatus),
    #[error("its {METADATA_ARG} answer is not the metadata JSON ({0})")]
    NotMetadata(#[source] serde_json::Error),
    #[error("it speaks metadata schema_version {0}; this zedops knows 1")]
    Schema(u32),
}

/// Runs `path zedops-plugin-metadata` with a deadline and reads its answer (at most 64 KiB).
pub fn metadata(path: &Path) -> Result<Metadata, Broken> {
    let mut child = Command::new(path)
        .arg(METADATA_ARG)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(Broken::Spawn)?;
    // Read on a thread so that a chatty plugin cannot block on a full pipe while we wait.
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(s) = stdout {
            let _ = s.take(METADATA_MAX_BYTES).read_to_end(&mut out);
        }
        out
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() < METADATA_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Broken::Timeout);
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(Broken::Failed(status));
    }
    let m: Metadata = serde_json::from_slice(&out).map_err(Broken::NotMetadata)?;
    if m.schema_version != 1 {
        return Err(Broken::Schema(m.schema_version));
    }
    Ok(m)
}

/// The names of the built-in commands (with aliases and `help`): a plugin never shadows them.
pub fn builtins() -> Vec<String> {
    let cmd = crate::args::command();
    let mut names = vec!["help".to_owned()];
    for sc in cmd.get_subcommands() {
        names.push(sc.get_name().to_owned());
        names.extend(sc.get_all_aliases().map(str::to_owned));
    }
    names
}

/// Every plugin, with its metadata read and its status.
pub fn list() -> Vec<Plugin> {
    let builtins = builtins();
    find_all(&search_dirs())
        .into_iter()
        .map(|(name, path)| {
            if builtins.contains(&name) {
                // Never run, not even for its metadata.
                let problem = Some(format!("`zedops {name}` is a built-in command"));
                return Plugin {
                    metadata: None,
                    name,
                    path,
                    status: "shadowed",
                    problem,
                };
            }
            match metadata(&path) {
                Ok(m) => Plugin {
                    name,
                    path,
                    metadata: Some(m),
                    status: "ok",
                    problem: None,
                },
                Err(e) => Plugin {
                    name,
                    path,
                    metadata: None,
                    status: "broken",
                    problem: Some(e.to_string()),
                },
            }
        })
        .collect()
}

/// The `Plugins:` section of `zedops --help`; empty when there are none.
pub fn help_section() -> String {
    let plugins = list();
    if plugins.is_empty() {
        return String::new();
    }
    let mut s = String::from("Plugins:\n");
    for p in plugins {
        let what = match (&p.metadata, p.status) {
            (Some(m), "ok") => format!("{} ({})", m.description, m.version),
            (_, status) => format!("[{status}] {}", p.problem.unwrap_or_default()),
        };
        s.push_str(&format!("  {:<22}{what}\n", p.name));
    }
    s
}

/// `zedops plugins`: the table (or JSON) of every plugin.
pub fn print_list(o: &ClientOpts) {
    let plugins = list();
    if o.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plugins).unwrap_or_default()
        );
        return;
    }
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|p| {
            let m = p.metadata.as_ref();
            let status = match &p.problem {
                Some(why) => format!("{}: {why}", p.status),
                None => p.status.to_owned(),
            };
            vec![
                p.name.clone(),
                m.map(|m| m.version.clone()).unwrap_or_else(|| "-".into()),
                m.map(|m| m.description.clone()).unwrap_or_default(),
                p.path.display().to_string(),
                status,
            ]
        })
        .collect();
    let headers = ["NAME", "VERSION", "DESCRIPTION", "PATH", "STATUS"];
    print!("{}", crate::output::table(&headers, &rows));
}

/// The environment a plugin runs with: the client settings as the built-in commands resolve
/// them (flags > environment > `zedops login` config > this host's admin token).
fn environment(o: &ClientOpts) -> Vec<(&'static str, OsString)> {
    let (server, token) = crate::client::resolve(o.server.clone(), o.token.clone());
    let mut env = vec![("ZEDOPS_SERVER", OsString::from(server))];
    if let Some(t) = token {
        env.push(("ZEDOPS_TOKEN", t.into()));
    }
    if let Some(ca) = &o.ca_file {
        env.push(("ZEDOPS_CA_FILE", ca.clone().into_os_string()));
    }
    let output = match o.output {
        Output::Table => "table",
        Output::Json => "json",
    };
    env.push(("ZEDOPS_OUTPUT", output.into()));
    env
}

/// `zedops <name> ARGS…` for a name that is no built-in: runs the plugin in this process's place
/// (exec), so its exit code is zedops' and its terminal is the user's.
pub fn run(o: &ClientOpts, args: &[OsString]) -> anyhow::Result<()> {
    let Some((name, rest)) = args.split_first() else {
        return Err(Exit::usage("no command given: see `zedops --help`").into());
    };
    let name = name.to_string_lossy();
    let Some(path) = find(&search_dirs(), &name) else {
        let hint = suggestion(&name, &builtins())
            .map(|b| format!("did you mean `zedops {b}`? "))
            .unwrap_or_default();
        return Err(Exit::usage(format!(
            "unknown command {name:?}: {hint}see `zedops --help` (no plugin zedops-{name} in {} or on PATH)",
            crate::paths::data_dir().join("plugins").display()
        ))
        .into());
    };
    if let Err(why) = metadata(&path) {
        return Err(Exit::new(
            exit::ERROR,
            format!(
                "the plugin {} is broken, so it is not run: {why}",
                path.display()
            ),
        )
        .into());
    }
    let mut cmd = Command::new(&path);
    cmd.args(rest).envs(environment(o));
    exec(cmd, &path)
}

/// The built-in command closest to a mistyped `name` (at most two edits away), as clap would
/// have suggested before plugins took unknown names.
fn suggestion<'a>(name: &str, builtins: &'a [String]) -> Option<&'a str> {
    builtins
        .iter()
        .map(|b| (edit_distance(name, b), b))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, b)| b.as_str())
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(unix)]
fn exec(mut cmd: Command, path: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let e = cmd.exec();
    Err(Exit::new(
        exit::ERROR,
        format!("cannot run the plugin {}: {e}", path.display()),
    )
    .into())
}

#[cfg(not(unix))]
fn exec(mut cmd: Command, path: &Path) -> anyhow::Result<()> {
    let st = cmd.status().map_err(|e| {
        Exit::new(
            exit::ERROR,
            format!("cannot run the plugin {}: {e}", path.display()),
        )
    })?;
    std::process::exit(st.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["hello", "a", "my-tool2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Hello", "-x", "2x", "a_b", "a.b", "a/b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn typos_get_the_closest_builtin() {
        let b = builtins();
        assert_eq!(suggestion("restrat", &b), Some("restart"));
        assert_eq!(suggestion("pss", &b), Some("ps"));
        assert_eq!(suggestion("completely-else", &b), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn builtins_include_the_action_verbs_and_help() {
        let b = builtins();
        for name in ["ps", "restart", "logs", "help", "plugins", "serve"] {
            assert!(b.iter().any(|n| n == name), "{name}");
        }
    }
}
