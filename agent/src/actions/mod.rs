//! Operator-defined actions (`docs/actions.md`): commands an operator names once on an agent,
//! which every surface then offers (MQTT `action.run`, HTTP, the CLI, the dashboard, Home
//! Assistant buttons).
//!
//! - this module: [`Definition`] (what the agent runs; its advertised part is a
//!   `zedops_proto::defined::DefinedAction`), its validation, and [`Book`], the current set;
//! - `file`: TOML definitions (`<state-dir>/actions.d/*.toml`, `--actions FILE`), with the file
//!   and line of every refusal;
//! - `labels`: definitions carried by containers as `zedops.action.<name>.*` labels;
//! - `run`: running one (`action.run`), in its container or on the host (`host`).
//!
//! Invalid definitions are refused one by one, logged with where they came from; the valid ones
//! are served. Files are read again on SIGHUP and labels whenever the container list changes.

mod file;
mod host;
mod labels;
mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use zedops_proto::defined::{
    placeholder, DefinedAction, Target, MAX_ACTIONS, MAX_ADVERTISED_BYTES, MAX_PARAMS,
};
use zedops_proto::ops::ExecArgs;
use zedops_proto::{Container, ContainerRef};

pub use file::parse_file;
pub use labels::{label_actions, labels_of, ActionLabels, LABEL_PREFIX};
pub use run::run;

/// One action as the agent runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// What is advertised (never the command line).
    pub info: DefinedAction,
    /// The command, `{param}` elements substituted at run time.
    pub command: Vec<String>,
    pub workdir: Option<String>,
    /// `exec` only: the user in the container.
    pub user: Option<String>,
    pub env: Vec<String>,
    /// Where it was defined, for messages: `file.toml:12` or `label of container mc`.
    pub origin: String,
}

/// A definition refused, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct Refused {
    pub origin: String,
    pub message: String,
}

impl Definition {
    /// Checks what the types cannot: names, bounds, placeholders and the combinations refused.
    pub fn validate(&self) -> Result<(), String> {
        let a = &self.info;
        if !zedops_proto::names::is_valid_agent_name(&a.name) {
            return Err(format!(
                "action name {:?} is invalid: use 1-63 of a-z, 0-9, '-', '_'",
                a.name
            ));
        }
        if a.description.chars().count() > zedops_proto::defined::MAX_DESCRIPTION_CHARS {
            return Err("the description is longer than 200 characters".into());
        }
        if a.role == zedops_proto::http::Role::Viewer {
            return Err("role must be operator or admin: viewers run nothing".into());
        }
        if a.timeout_s == 0 || a.timeout_s > zedops_proto::defined::MAX_ACTION_TIMEOUT_S {
            return Err(format!(
                "timeout {} s is out of range: use 1 s to 15 min",
                a.timeout_s
            ));
        }
        self.validate_target()?;
        self.validate_params()?;
        // The bounds of exec's command line, environment, working directory and user.
        let placeholder_ref = ContainerRef::new("x").map_err(|e| e.to_string())?;
        let args = ExecArgs {
            container: placeholder_ref,
            cmd: self.command.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            env: self.env.clone(),
            timeout_s: Some(a.timeout_s),
        };
        args.check().map(|_| ()).map_err(|e| e.message)
    }

    fn validate_target(&self) -> Result<(), String> {
        match (self.info.target, &self.info.container) {
            (Target::Exec, None) => Err("target exec needs container = \"NAME\"".into()),
            (Target::Exec, Some(c)) if ContainerRef::new(c.as_str()).is_err() => {
                Err(format!("container {c:?} is not a container name"))
            }
            (Target::Host, Some(_)) => Err(
                "target host runs on the agent's host: drop container, or use target = \"exec\""
                    .into(),
            ),
            (Target::Host, None) if self.user.is_some() => {
                Err("user applies to exec only: a host action runs as the agent's user".into())
            }
            _ => Ok(()),
        }
    }

    fn validate_params(&self) -> Result<(), String> {
        let params = &self.info.params;
        if params.len() > MAX_PARAMS {
            return Err(format!("at most {MAX_PARAMS} parameters"));
        }
        for p in params {
            p.validate()
                .map_err(|why| format!("parameter {}: {why}", p.name))?;
        }
        if self.command.first().and_then(|a| placeholder(a)).is_some() {
            return Err("the program (the first element of command) cannot be a parameter".into());
        }
        for arg in &self.command {
            if let Some(name) = placeholder(arg) {
                if !params.iter().any(|p| p.name == name) {
                    return Err(format!(
                        "{arg} in command names no parameter of this action"
                    ));
                }
            } else if let Some(p) = params
                .iter()
                .find(|p| arg.contains(&format!("{{{}}}", p.name)))
            {
                return Err(format!(
                    "{{{}}} must be a whole argument of command (parameters are never spliced into a string): split {arg:?}",
                    p.name
                ));
            }
        }
        let unset = params.iter().find(|p| p.default.is_none());
        match unset {
            Some(p) if self.info.ha => Err(format!(
                "a Home Assistant button sends no parameters: give parameter {} a default, or set ha = false",
                p.name
            )),
            _ if self.info.ha && self.info.role == zedops_proto::http::Role::Admin => Err(
                "an admin action gets no Home Assistant button (Home Assistant commands run as operator): set ha = false or role = \"operator\"".into(),
            ),
            _ => Ok(()),
        }
    }
}

/// The actions an agent serves: those of its files and those of its containers' labels.
#[derive(Debug, Default)]
pub struct Book {
    /// `--actions FILE`s, then `<state-dir>/actions.d/*.toml` in name order.
    sources: Vec<PathBuf>,
    dir: Option<PathBuf>,
    files: RwLock<Vec<Definition>>,
    labels: RwLock<Vec<Definition>>,
}

impl Book {
    pub fn new(files: Vec<PathBuf>, state_dir: Option<&Path>) -> Self {
        Self {
            sources: files,
            dir: state_dir.map(|d| d.join("actions.d")),
            ..Self::default()
        }
    }

    /// (Re)reads the files; returns what was refused (the rest is served).
    pub fn reload_files(&self) -> Vec<Refused> {
        let mut paths = self.sources.clone();
        if let Some(dir) = &self.dir {
            paths.extend(toml_files_in(dir));
        }
        let mut refused = Vec::new();
        let mut found = Vec::new();
        for path in &paths {
            let (defs, bad) = parse_file(path);
            found.extend(defs);
            refused.extend(bad);
        }
        let kept = dedupe(found, &[], &mut refused);
        if let Ok(mut f) = self.files.write() {
            *f = kept;
        }
        refused
    }

    /// Takes the actions of the containers' labels; returns what was refused.
    pub fn set_containers(&self, containers: &[Container]) -> Vec<Refused> {
        let (found, mut refused) = label_actions(containers);
        let files = self.files.read().map(|f| f.clone()).unwrap_or_default();
        let kept = dedupe(found, &files, &mut refused);
        if let Ok(mut l) = self.labels.write() {
            *l = kept;
        }
        refused
    }

    /// Every action served, files first.
    pub fn all(&self) -> Vec<Definition> {
        let mut v = self.files.read().map(|f| f.clone()).unwrap_or_default();
        v.extend(self.labels.read().map(|l| l.clone()).unwrap_or_default());
        v.truncate(MAX_ACTIONS);
        v
    }

    /// What the status advertises.
    pub fn advertised(&self) -> Vec<DefinedAction> {
        self.all().into_iter().map(|d| d.info).collect()
    }

    pub fn get(&self, name: &str) -> Option<Definition> {
        self.all().into_iter().find(|d| d.info.name == name)
    }
}

/// The first definition of each name wins (those in `taken` before all); later ones are refused.
fn dedupe(
    found: Vec<Definition>,
    taken: &[Definition],
    refused: &mut Vec<Refused>,
) -> Vec<Definition> {
    let mut seen: BTreeMap<String, String> = taken
        .iter()
        .map(|d| (d.info.name.clone(), d.origin.clone()))
        .collect();
    let size = |d: &Definition| serde_json::to_vec(&d.info).map_or(usize::MAX, |v| v.len());
    let mut bytes: usize = taken.iter().map(size).sum();
    let mut kept = Vec::new();
    for d in found {
        let more = size(&d);
        if let Some(first) = seen.get(&d.info.name) {
            refused.push(Refused {
                origin: d.origin.clone(),
                message: format!("action {} is already defined at {first}", d.info.name),
            });
        } else if seen.len() >= MAX_ACTIONS || bytes.saturating_add(more) > MAX_ADVERTISED_BYTES {
            refused.push(Refused {
                origin: d.origin.clone(),
                message: format!(
                    "an agent serves at most {MAX_ACTIONS} actions, advertised in at most {} KiB",
                    MAX_ADVERTISED_BYTES / 1024
                ),
            });
        } else {
            bytes += more;
            seen.insert(d.info.name.clone(), d.origin.clone());
            kept.push(d);
        }
    }
    kept
}

/// `*.toml` files of `dir`, sorted; none when it does not exist.
fn toml_files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

/// `30`, `30s`, `5m`, `1h` as seconds.
pub fn parse_timeout(s: &str) -> Option<u32> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u32 = digits.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("30"), Some(30));
        assert_eq!(parse_timeout("30s"), Some(30));
        assert_eq!(parse_timeout("5m"), Some(300));
        assert_eq!(parse_timeout("1h"), Some(3600));
        assert_eq!(parse_timeout("5x"), None);
        assert_eq!(parse_timeout(""), None);
    }
}
