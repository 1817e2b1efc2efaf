//! Action definitions in TOML (`docs/actions.md` § Files): one `[action.NAME]` table per
//! action. Each action is read on its own, so one bad action refuses only itself; a file that is
//! not TOML at all refuses everything in it. Every refusal names the file and line.

use std::path::Path;

use serde::Deserialize;
use zedops_proto::defined::{DefinedAction, ParamKind, ParamSpec, Target};
use zedops_proto::http::Role;

use super::{parse_timeout, Definition, Refused};

/// Largest definitions file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    action: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    #[serde(default)]
    description: String,
    target: Option<Target>,
    container: Option<String>,
    command: Vec<String>,
    timeout: Option<toml::Value>,
    role: Option<Role>,
    #[serde(default)]
    confirm: bool,
    #[serde(default)]
    ha: bool,
    workdir: Option<String>,
    user: Option<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    params: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(rename = "type")]
    kind: ParamKind,
    #[serde(default)]
    description: String,
    pattern: Option<String>,
    min: Option<i64>,
    max: Option<i64>,
    #[serde(default)]
    choices: Vec<String>,
    default: Option<toml::Value>,
}

/// The valid actions of one file, and the refusals (`file:line: why`).
pub fn parse_file(path: &Path) -> (Vec<Definition>, Vec<Refused>) {
    let shown = path.display().to_string();
    let whole = |message: String| {
        (
            Vec::new(),
            vec![Refused {
                origin: shown.clone(),
                message,
            }],
        )
    };
    match read_bounded(path) {
        Ok(text) => parse_str(&shown, &text),
        Err(message) => whole(message),
    }
}

/// A regular file's text, at most [`MAX_FILE_BYTES`]: a FIFO or a device (`/dev/zero` behind a
/// symlink) is refused rather than read, so a reload never hangs nor fills memory.
fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file; not read".into());
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes; not read"));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

/// [`parse_file`] on text already read (`shown` names it in messages).
pub fn parse_str(shown: &str, text: &str) -> (Vec<Definition>, Vec<Refused>) {
    let doc: FileDoc = match toml::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            let message = e.message().to_owned();
            return (
                Vec::new(),
                vec![Refused {
                    origin: format!("{shown}:{line}"),
                    message,
                }],
            );
        }
    };
    let (mut defs, mut refused) = (Vec::new(), Vec::new());
    for (name, value) in doc.action {
        let origin = format!("{shown}:{}", header_line(text, &name));
        match definition(&name, value, origin.clone()) {
            Ok(d) => defs.push(d),
            Err(message) => refused.push(Refused { origin, message }),
        }
    }
    (defs, refused)
}

fn definition(name: &str, value: toml::Value, origin: String) -> Result<Definition, String> {
    let raw: RawAction = value
        .try_into()
        .map_err(|e: toml::de::Error| format!("action {name}: {}", e.message()))?;
    let target = match (raw.target, &raw.container) {
        (Some(t), _) => t,
        (None, Some(_)) => Target::Exec,
        (None, None) => {
            return Err(format!(
                "action {name}: say where it runs: container = \"NAME\" (exec) or target = \"host\""
            ))
        }
    };
    let timeout_s = match &raw.timeout {
        None => zedops_proto::ops::DEFAULT_EXEC_TIMEOUT_S,
        Some(v) => timeout_of(v).ok_or_else(|| {
            format!("action {name}: timeout must be seconds (30) or a duration (\"30s\", \"5m\")")
        })?,
    };
    let mut params = Vec::new();
    for (pname, pv) in raw.params {
        params
            .push(param(&pname, pv).map_err(|e| format!("action {name}: parameter {pname}: {e}"))?);
    }
    let d = Definition {
        info: DefinedAction {
            name: name.to_owned(),
            description: raw.description,
            target,
            container: raw.container,
            params,
            role: raw.role.unwrap_or(Role::Operator),
            confirm: raw.confirm,
            ha: raw.ha,
            timeout_s,
            source: "file".into(),
        },
        command: raw.command,
        workdir: raw.workdir,
        user: raw.user,
        env: raw.env,
        origin,
    };
    d.validate().map_err(|e| format!("action {name}: {e}"))?;
    Ok(d)
}

fn param(name: &str, v: toml::Value) -> Result<ParamSpec, String> {
    let raw: RawParam = v
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_owned())?;
    let default = match raw.default {
        None => None,
        Some(toml::Value::String(s)) => Some(s),
        Some(toml::Value::Integer(i)) => Some(i.to_string()),
        Some(toml::Value::Boolean(b)) => Some(b.to_string()),
        Some(_) => return Err("default must be a string, an integer or a boolean".into()),
    };
    Ok(ParamSpec {
        name: name.to_owned(),
        kind: raw.kind,
        description: raw.description,
        pattern: raw.pattern,
        min: raw.min,
        max: raw.max,
        choices: raw.choices,
        default,
    })
}

fn timeout_of(v: &toml::Value) -> Option<u32> {
    match v {
        toml::Value::Integer(i) => u32::try_from(*i).ok(),
        toml::Value::String(s) => parse_timeout(s),
        _ => None,
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    text.get(..byte).map_or(1, |t| t.matches('\n').count() + 1)
}

/// The line of the table `[action.NAME]` (or, without one, of its first sub-table
/// `[action.NAME.…]`); 1 if not found.
fn header_line(text: &str, name: &str) -> usize {
    let headers = [format!("action.{name}"), format!("action.\"{name}\"")];
    let table = |l: &str| {
        let inner = l
            .trim()
            .strip_prefix('[')?
            .split(']')
            .next()?
            .trim()
            .to_owned();
        Some(inner)
    };
    let find = |pred: &dyn Fn(&str) -> bool| {
        text.lines()
            .position(|l| table(l).is_some_and(|t| pred(&t)))
            .map(|i| i + 1)
    };
    find(&|t| headers.iter().any(|h| t == h))
        .or_else(|| find(&|t| headers.iter().any(|h| t.starts_with(&format!("{h}.")))))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_AND_BAD: &str = r#"
[action.save]
description = "Save the world"
container = "mc"
command = ["rcon-cli", "save-all"]
timeout = "30s"
ha = true

[action.broken]
container = "mc"
command = ["say", "x{message}"]
[action.broken.params.message]
type = "string"

[action.broadcast]
container = "mc"
command = ["rcon-cli", "say", "{message}"]
[action.broadcast.params.message]
type = "string"
pattern = "[^\\n]{1,200}"

[action.backup]
target = "host"
command = ["/bin/true"]
role = "admin"
"#;

    #[test]
    fn bad_actions_are_refused_with_their_line_and_the_rest_kept() {
        let (defs, refused) = parse_str("a.toml", GOOD_AND_BAD);
        let names: Vec<&str> = defs.iter().map(|d| d.info.name.as_str()).collect();
        assert_eq!(names, ["save", "broadcast", "backup"]);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].origin, "a.toml:9");
        assert!(
            refused[0].message.contains("whole argument"),
            "{}",
            refused[0]
        );
        assert_eq!(defs[0].info.timeout_s, 30);
        assert_eq!(defs[0].info.target, Target::Exec);
        assert_eq!(defs[2].info.role, Role::Admin);
        assert_eq!(defs[1].info.params[0].name, "message");
    }

    #[test]
    fn the_examples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        for f in ["actions.toml", "game-server.toml"] {
            let (defs, refused) = parse_file(&dir.join(f));
            assert!(refused.is_empty() && !defs.is_empty(), "{f}: {refused:?}");
        }
    }

    #[test]
    fn lines_are_those_of_the_exact_table() {
        let text = "[action.save-all]\ntarget = \"host\"\ncommand = [\"x\"]\n\n[action.save]\ncommand = [\"x\"]\n";
        let (_, refused) = parse_str("d.toml", text);
        assert_eq!(refused[0].origin, "d.toml:5", "{refused:?}");
    }

    #[test]
    fn not_toml_is_one_refusal_with_the_line() {
        let (defs, refused) = parse_str("b.toml", "[action.x]\ncommand = [\"a\"\n");
        assert!(defs.is_empty());
        assert_eq!(refused.len(), 1);
        assert!(refused[0].origin.starts_with("b.toml:"), "{}", refused[0]);
    }

    #[test]
    fn refusals() {
        for (toml, why) in [
            ("[action.a]\ncommand = [\"x\"]\n", "say where it runs"),
            ("[action.a]\ntarget = \"host\"\ncommand = []\n", "cmd must name"),
            ("[action.a]\ncontainer = \"c\"\ncommand = [\"x\"]\nrole = \"viewer\"\n", "viewers"),
            ("[action.a]\ncontainer = \"c\"\ncommand = [\"x\"]\ntimeout = \"16m\"\n", "out of range"),
            ("[action.a]\ncontainer = \"c\"\ncommand = [\"x\", \"{p}\"]\n", "names no parameter"),
            ("[action.a]\ncontainer = \"c\"\ncommand = [\"{p}\"]\n[action.a.params.p]\ntype = \"string\"\n", "the program"),
            ("[action.a]\ncontainer = \"c\"\ncommand = [\"x\"]\nrole = \"admin\"\nha = true\n", "admin action"),
            ("[action.a]\ncontainer = \"c\"\ncommand = [\"x\", \"{p}\"]\nha = true\n[action.a.params.p]\ntype = \"string\"\n", "default"),
            ("[action.a]\ncontainer = \"c\"\ncommand = [\"x\"]\n[action.a.params.p]\ntype = \"string\"\nmax = 3\n", "min and max for ints"),
            ("[action.a]\ntarget = \"host\"\ncommand = [\"x\"]\nuser = \"root\"\n", "exec only"),
            ("[action.A]\ntarget = \"host\"\ncommand = [\"x\"]\n", "invalid"),
            ("[action.a]\ntarget = \"host\"\ncommand = [\"x\"]\nshell = true\n", "unknown field"),
        ] {
            let (defs, refused) = parse_str("c.toml", toml);
            assert!(defs.is_empty(), "{toml}");
            assert!(refused[0].message.contains(why), "{toml}: {}", refused[0]);
        }
    }
}
