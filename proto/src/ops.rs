//! Request/response operations. Each op is a type naming its wire name, argument type and result
//! type, so the agent's handler registry, the API's requester and the CLI agree by construction.
//!
//! New ops (such as operator-defined actions) are new types implementing [`Op`]; the agent's
//! dispatcher looks handlers up by [`Op::NAME`] and needs no change.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::{Container, ContainerDetail, DockerStatus};
use crate::names::ContainerRef;
use crate::reply::ErrorBody;

/// An operation of the request/response protocol.
pub trait Op {
    /// The topic level after `req/`, e.g. `container.restart`.
    const NAME: &'static str;
    type Args: Serialize + DeserializeOwned + Send + Sync + 'static;
    type Output: Serialize + DeserializeOwned + Send + Sync + 'static;
}

/// Default grace period of stop and restart, in seconds.
pub const DEFAULT_GRACE_S: u32 = 10;
/// Longest grace period a request may ask for.
pub const MAX_GRACE_S: u32 = 300;
/// Default and largest number of log lines.
pub const DEFAULT_TAIL: u32 = 100;
pub const MAX_TAIL: u32 = 10_000;

/// Decodes a request payload into the op's arguments. An empty payload means `{}`.
pub fn parse_args<O: Op>(payload: &[u8]) -> Result<O::Args, ErrorBody> {
    let payload: &[u8] = if payload.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        payload
    };
    serde_json::from_slice(payload)
        .map_err(|e| ErrorBody::bad_request(format!("invalid arguments for {}: {e}", O::NAME)))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// Arguments of ops that take only a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerArgs {
    pub container: ContainerRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopArgs {
    pub container: ContainerRef,
    /// Seconds between SIGTERM and SIGKILL; default 10, at most 300.
    #[serde(default)]
    pub grace_s: Option<u32>,
}

impl StopArgs {
    pub fn grace(&self) -> Result<u32, ErrorBody> {
        let g = self.grace_s.unwrap_or(DEFAULT_GRACE_S);
        if g > MAX_GRACE_S {
            return Err(ErrorBody::bad_request(format!(
                "grace_s {g} is too long: use at most {MAX_GRACE_S} seconds"
            )));
        }
        Ok(g)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillArgs {
    pub container: ContainerRef,
    /// Signal name (`SIGKILL`, `HUP`) or number; default `SIGKILL`.
    #[serde(default)]
    pub signal: Option<String>,
}

impl KillArgs {
    pub fn signal(&self) -> Result<String, ErrorBody> {
        let s = self.signal.clone().unwrap_or_else(|| "SIGKILL".to_owned());
        let valid_name = (1..=16).contains(&s.len())
            && s.as_bytes()[0].is_ascii_uppercase()
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'+' || b == b'-');
        let valid_number = s.parse::<u8>().is_ok_and(|n| (1..=64).contains(&n));
        if valid_name || valid_number {
            Ok(s)
        } else {
            Err(ErrorBody::bad_request(format!(
                "signal {s:?} is invalid: use a name such as SIGTERM or HUP, or a number from 1 to 64"
            )))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Include stopped containers (default true).
    #[serde(default = "yes")]
    pub all: bool,
}

impl Default for ListArgs {
    fn default() -> Self {
        Self { all: true }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsArgs {
    pub container: ContainerRef,
    /// Last N lines; default 100, at most 10 000 (with `since` and no `tail`: every line since
    /// then, as `docker logs --since` prints).
    #[serde(default)]
    pub tail: Option<u32>,
    #[serde(default)]
    pub timestamps: bool,
    /// Keep the stream open and send lines as they come (a stream: `crate::stream`).
    #[serde(default)]
    pub follow: bool,
    /// Only lines since then: a duration back from now (`10m`, `1h30m`, `45s`) or an RFC 3339
    /// time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// A stream's flow-control window and lease (`crate::stream::Flow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_s: Option<u32>,
}

impl LogsArgs {
    pub fn tail(&self) -> Result<u32, ErrorBody> {
        let t = self.tail.unwrap_or(DEFAULT_TAIL);
        if t > MAX_TAIL {
            return Err(ErrorBody::bad_request(format!(
                "tail {t} is too large: ask for at most {MAX_TAIL} lines"
            )));
        }
        Ok(t)
    }

    /// What Docker is asked for: `None` is every line (since a time, with no `tail`).
    pub fn docker_tail(&self) -> Result<Option<u32>, ErrorBody> {
        if self.since.is_some() && self.tail.is_none() {
            return Ok(None);
        }
        self.tail().map(Some)
    }

    /// `since` as Unix seconds, relative to `now`.
    pub fn since_unix(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Option<i64>, ErrorBody> {
        self.since
            .as_deref()
            .map(|s| crate::since::unix(s, now))
            .transpose()
    }
}

/// Result of `ping`.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    pub agent: String,
    pub version: String,
    pub docker: DockerStatus,
    /// Streams (log follows, stats) the agent serves now.
    #[serde(default)]
    pub streams: u32,
}

/// Result of `containers.list`.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerList {
    pub containers: Vec<Container>,
}

/// Result of every container action.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    pub container: Container,
    /// False when the container was already in the requested state.
    pub changed: bool,
}

#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// `stdout` or `stderr`.
    pub stream: String,
    pub text: String,
}

impl LogLine {
    /// Bytes this line takes in a JSON reply (`{"stream":"…","text":"…"},`), escapes included:
    /// a control character costs six (`\u0001`), so log budgets count this, not the raw text
    /// (issue 14, item 12).
    pub fn encoded_len(stream: &str, text: &str) -> usize {
        r#"{"stream":"","text":""},"#.len() + json_string_len(stream) + json_string_len(text)
    }
}

/// Length of `s` as the inside of a JSON string, as serde_json writes it.
pub fn json_string_len(s: &str) -> usize {
    s.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum()
}

/// Result of `container.logs`.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logs {
    pub container: String,
    pub lines: Vec<LogLine>,
    /// True when older lines were dropped to keep the reply within its size bound.
    pub truncated: bool,
}

/// One chunk of a followed log (`container.logs` with `follow`): the lines since the last chunk,
/// in order.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub container: String,
    pub lines: Vec<LogLine>,
}

/// Default and largest deadline of a command run in a container (`container.exec`), and the
/// default bound of each of its outputs.
pub const DEFAULT_EXEC_TIMEOUT_S: u32 = 60;
pub const MAX_EXEC_TIMEOUT_S: u32 = 900;
pub const DEFAULT_OUTPUT_BYTES: usize = 64 * 1024;
/// Bounds of an exec's command line and environment.
pub const MAX_EXEC_ARGS: usize = 256;
pub const MAX_EXEC_ARG_CHARS: usize = 4096;
pub const MAX_EXEC_ENV: usize = 64;

/// Arguments of `container.exec`: one non-interactive command (no shell, no stdin, no TTY). Over
/// HTTP the body is `http::ExecRequest` (the same without `container`, which is in the path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecArgs {
    pub container: ContainerRef,
    /// The command and its arguments, each passed as it is (never through a shell).
    pub cmd: Vec<String>,
    /// Working directory inside the container.
    #[serde(default)]
    pub workdir: Option<String>,
    /// User (name or UID[:GID]) to run as.
    #[serde(default)]
    pub user: Option<String>,
    /// Extra environment, `NAME=value` each.
    #[serde(default)]
    pub env: Vec<String>,
    /// Seconds before the command is killed (default 60, at most 900).
    #[serde(default)]
    pub timeout_s: Option<u32>,
}

impl ExecArgs {
    /// Checks the bounds; the deadline when they hold.
    pub fn check(&self) -> Result<std::time::Duration, ErrorBody> {
        let bad = |m: String| Err(ErrorBody::bad_request(m));
        if self.cmd.is_empty() {
            return bad("cmd must name a command: [\"program\", \"arg\", …]".into());
        }
        if self.cmd.len() > MAX_EXEC_ARGS {
            return bad(format!(
                "cmd has {} arguments; at most {MAX_EXEC_ARGS}",
                self.cmd.len()
            ));
        }
        let strings = self
            .cmd
            .iter()
            .chain(&self.env)
            .chain(&self.workdir)
            .chain(&self.user);
        let too_long = |a: &String| a.chars().count() > MAX_EXEC_ARG_CHARS;
        if strings.into_iter().any(|a| too_long(a) || a.contains('\0')) {
            return bad(format!(
                "every argument, env entry, workdir and user must be at most {MAX_EXEC_ARG_CHARS} characters without NUL"
            ));
        }
        if self.env.len() > MAX_EXEC_ENV || !self.env.iter().all(|e| valid_env(e)) {
            return bad(format!(
                "env takes at most {MAX_EXEC_ENV} entries of NAME=value (NAME of letters, digits and '_', not starting with a digit)"
            ));
        }
        let t = self.timeout_s.unwrap_or(DEFAULT_EXEC_TIMEOUT_S);
        if t == 0 || t > MAX_EXEC_TIMEOUT_S {
            return bad(format!(
                "timeout_s {t} is out of range: use 1 to {MAX_EXEC_TIMEOUT_S} seconds"
            ));
        }
        Ok(std::time::Duration::from_secs(t.into()))
    }
}

fn valid_env(e: &str) -> bool {
    let Some((name, _)) = e.split_once('=') else {
        return false;
    };
    let b = name.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// What a command run on an agent did: `container.exec` and operator-defined actions.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's exit code; absent when it was killed at its deadline.
    pub exit_code: Option<i64>,
    /// Output as text (invalid UTF-8 replaced), each at most its bound.
    pub stdout: String,
    pub stderr: String,
    /// True when output beyond the bound was dropped (the end is kept out, the start kept).
    pub truncated: bool,
    /// True when the deadline passed and the command was killed.
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// Arguments of `container.stats`: one container, or (without `container`) every running one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsArgs {
    #[serde(default)]
    pub container: Option<ContainerRef>,
    /// Keep sending a snapshot every `interval_s` (a stream: `crate::stream`).
    #[serde(default)]
    pub stream: bool,
    /// Seconds between snapshots of a stream; default 2, 1 to 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<u32>,
    /// A stream's flow-control window and lease (`crate::stream::Flow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_s: Option<u32>,
}

/// Default and bounds of a stats stream's interval.
pub const DEFAULT_STATS_INTERVAL_S: u32 = 2;
pub const MAX_STATS_INTERVAL_S: u32 = 3600;

impl StatsArgs {
    pub fn interval(&self) -> Result<std::time::Duration, ErrorBody> {
        let i = self.interval_s.unwrap_or(DEFAULT_STATS_INTERVAL_S);
        if !(1..=MAX_STATS_INTERVAL_S).contains(&i) {
            return Err(ErrorBody::bad_request(format!(
                "interval_s {i} is out of range: use 1 to {MAX_STATS_INTERVAL_S} seconds"
            )));
        }
        Ok(std::time::Duration::from_secs(i.into()))
    }
}

/// One container's resource use: the numbers `docker stats` shows, computed the same way.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStat {
    pub id: String,
    pub name: String,
    /// CPU use between two samples about a second apart; 100 = one core busy.
    pub cpu_percent: f64,
    /// Memory in use without the page cache, in bytes, and the limit (the host's memory when the
    /// container has none).
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub memory_percent: f64,
    /// Network bytes received and sent, every interface.
    pub net_rx: u64,
    pub net_tx: u64,
    /// Block device bytes read and written.
    pub block_read: u64,
    pub block_write: u64,
    pub pids: u64,
}

/// Result of `container.stats`.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub stats: Vec<ContainerStat>,
}

macro_rules! op {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $args:ty, $out:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;
        impl Op for $ty {
            const NAME: &'static str = $name;
            type Args = $args;
            type Output = $out;
        }
    };
}

op!(/// Liveness and Docker state of an agent.
    Ping, "ping", NoArgs, Pong);
op!(/// A live container list.
    ContainersList, "containers.list", ListArgs, ContainerList);
op!(
    ContainerInspect,
    "container.inspect",
    ContainerArgs,
    ContainerDetail
);
op!(
    ContainerStart,
    "container.start",
    ContainerArgs,
    ActionResult
);
op!(ContainerStop, "container.stop", StopArgs, ActionResult);
op!(
    ContainerRestart,
    "container.restart",
    StopArgs,
    ActionResult
);
op!(ContainerKill, "container.kill", KillArgs, ActionResult);
op!(
    ContainerPause,
    "container.pause",
    ContainerArgs,
    ActionResult
);
op!(
    ContainerUnpause,
    "container.unpause",
    ContainerArgs,
    ActionResult
);
op!(ContainerLogs, "container.logs", LogsArgs, Logs);
op!(/// One non-interactive command in a container.
    ContainerExec, "container.exec", ExecArgs, CommandResult);
op!(/// An operator-defined action (`docs/actions.md`).
    ActionRun, "action.run", crate::defined::RunArgs, CommandResult);
op!(/// Resource use of one container, or of every running one.
    ContainerStats, "container.stats", StatsArgs, Stats);

/// Every v1 op name.
pub const ALL: [&str; 13] = [
    Ping::NAME,
    ContainersList::NAME,
    ContainerInspect::NAME,
    ContainerStart::NAME,
    ContainerStop::NAME,
    ContainerRestart::NAME,
    ContainerKill::NAME,
    ContainerPause::NAME,
    ContainerUnpause::NAME,
    ContainerLogs::NAME,
    ContainerExec::NAME,
    ActionRun::NAME,
    ContainerStats::NAME,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::ErrorCode;

    #[test]
    fn since_without_tail_is_every_line_since() {
        let args = |json: &str| parse_args::<ContainerLogs>(json.as_bytes()).unwrap();
        let t = |json: &str| args(json).docker_tail().unwrap();
        assert_eq!(t(r#"{"container":"web"}"#), Some(DEFAULT_TAIL));
        assert_eq!(t(r#"{"container":"web","since":"10m"}"#), None);
        assert_eq!(
            t(r#"{"container":"web","since":"10m","follow":true}"#),
            None
        );
        assert_eq!(t(r#"{"container":"web","since":"10m","tail":5}"#), Some(5));
    }

    #[test]
    fn empty_payload_is_empty_object() {
        assert_eq!(parse_args::<Ping>(b"").unwrap(), NoArgs {});
        assert!(parse_args::<ContainersList>(b" ").unwrap().all);
        assert!(
            !parse_args::<ContainersList>(br#"{"all":false}"#)
                .unwrap()
                .all
        );
    }

    #[test]
    fn malformed_args_are_bad_request() {
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"container": 5}"#,
            br#"{"container":"a/b"}"#,
            br#"{"container":"x","grace":3}"#,
        ] {
            let err = parse_args::<ContainerStop>(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{err}");
            assert!(err.message.contains("container.stop"), "{err}");
        }
    }

    #[test]
    fn bounds() {
        let a = parse_args::<ContainerStop>(br#"{"container":"web-1","grace_s":301}"#).unwrap();
        assert_eq!(a.grace().unwrap_err().code, ErrorCode::BadRequest);
        let a = parse_args::<ContainerStop>(br#"{"container":"web-1"}"#).unwrap();
        assert_eq!(a.grace().unwrap(), 10);
        let l = parse_args::<ContainerLogs>(br#"{"container":"web-1","tail":10001}"#).unwrap();
        assert!(l.tail().is_err());
        for (sig, ok) in [
            ("SIGTERM", true),
            ("HUP", true),
            ("9", true),
            ("0", false),
            ("sig term", false),
            ("$(x)", false),
        ] {
            let k = KillArgs {
                container: ContainerRef::new("w").unwrap(),
                signal: Some(sig.into()),
            };
            assert_eq!(k.signal().is_ok(), ok, "{sig}");
        }
    }

    #[test]
    fn exec_bounds() {
        let ok = |json: &str| {
            parse_args::<ContainerExec>(json.as_bytes())
                .unwrap()
                .check()
        };
        assert_eq!(
            ok(r#"{"container":"w","cmd":["echo","; rm -rf /"]}"#).unwrap(),
            std::time::Duration::from_secs(60)
        );
        for bad in [
            r#"{"container":"w","cmd":[]}"#,
            r#"{"container":"w","cmd":["x"],"env":["1A=b"]}"#,
            r#"{"container":"w","cmd":["x"],"env":["NOEQUALS"]}"#,
            r#"{"container":"w","cmd":["x"],"timeout_s":901}"#,
            r#"{"container":"w","cmd":["x"],"timeout_s":0}"#,
            r#"{"container":"w","cmd":["a\u0000b"]}"#,
        ] {
            assert_eq!(ok(bad).unwrap_err().code, ErrorCode::BadRequest, "{bad}");
        }
        assert!(
            parse_args::<ContainerExec>(br#"{"container":"w","cmd":["x"],"tty":true}"#).is_err()
        );
    }

    #[test]
    fn result_round_trip() {
        let logs = Logs {
            container: "w".into(),
            lines: vec![LogLine {
                stream: "stdout".into(),
                text: "hi".into(),
            }],
            truncated: false,
        };
        let r = crate::Reply::success(&logs);
        let back: Logs = crate::Reply::decode(&r.to_bytes()).unwrap();
        assert_eq!(back, logs);
    }

    #[test]
    fn encoded_len_is_what_serde_json_writes() {
        let mut texts: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(|c| c.to_string().repeat(3))
            .collect();
        texts.extend(["é€😀", "\u{7f}\u{2028}", "plain", ""].map(str::to_owned));
        for text in texts {
            let line = LogLine {
                stream: "stderr".into(),
                text: text.clone(),
            };
            let written = serde_json::to_string(&line).unwrap().len() + 1; // and its comma
            assert_eq!(LogLine::encoded_len("stderr", &text), written, "{text:?}");
        }
    }
}
