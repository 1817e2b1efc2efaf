//! Operator-defined actions (`docs/actions.md`): what an agent advertises of each in its signed
//! status ([`DefinedAction`]), the request that runs one (`action.run`, [`RunArgs`]), and the
//! one check of parameters against their schema ([`DefinedAction::check_params`]) that the API
//! applies before it sends anything and the agent applies again before it runs anything.
//!
//! Parameters are substituted only as whole argv elements (an element that is exactly `{name}`),
//! never spliced into a string or a shell line, so `; rm -rf /` arrives as one literal argument.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::Role;
use crate::ops::{MAX_EXEC_ARG_CHARS, MAX_EXEC_TIMEOUT_S};
use crate::ErrorBody;

/// Most actions one agent advertises (files and labels together); more are refused at load.
pub const MAX_ACTIONS: usize = 128;
/// Most parameters of one action.
pub const MAX_PARAMS: usize = 16;
/// Longest description, and longest parameter pattern.
pub const MAX_DESCRIPTION_CHARS: usize = 200;
pub const MAX_PATTERN_CHARS: usize = 500;
/// Most choices of an `enum` parameter.
pub const MAX_CHOICES: usize = 64;
/// Most bytes the actions of one agent take in its status, as JSON; more are refused at load.
pub const MAX_ADVERTISED_BYTES: usize = 256 * 1024;
/// Compiled size bound of a parameter pattern (patterns also come from agents to the API).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Where an action runs.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "lowercase")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `docker exec` in the action's container.
    Exec,
    /// A process of the agent, on the host (never through a shell).
    Host,
}

/// The type of a parameter.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "lowercase")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    String,
    Int,
    Enum,
    Bool,
}

/// One parameter of an action, as advertised.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", oai(rename = "type"))]
    pub kind: ParamKind,
    #[serde(default)]
    pub description: String,
    /// `string`: a regular expression the whole value must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// `int`: the inclusive range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// `enum`: the values allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// The value used when the request leaves the parameter out; without one it is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// An operator-defined action as the agent advertises it (never its command line).
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinedAction {
    /// Agent-name rules: `^[a-z0-9][a-z0-9_-]{0,62}$`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub target: Target,
    /// `exec`: the container it runs in (its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamSpec>,
    // `operator` or `admin`. (No doc comment: on an enum field poem-openapi writes an `allOf`
    // that openapi-python-client refuses.)
    pub role: Role,
    /// The dashboard asks before it runs the action.
    #[serde(default)]
    pub confirm: bool,
    /// Home Assistant has a button for it.
    #[serde(default)]
    pub ha: bool,
    /// Seconds before the command is killed.
    pub timeout_s: u32,
    /// `file` (a TOML definition) or `label` (the container's labels).
    pub source: String,
}

/// Deserializes a status's `actions`, leaving out those that do not parse (a newer agent's).
pub fn lenient_actions<'de, D>(d: D) -> Result<Vec<DefinedAction>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: Vec<Value> = Deserialize::deserialize(d)?;
    Ok(raw
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect())
}

/// Arguments of `action.run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunArgs {
    pub action: String,
    /// Values by parameter name: strings, numbers or booleans as the parameter's type takes.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// Seconds before the command is killed: at most the action's own timeout (its default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u32>,
}

/// A parameter value that does not fit its schema, or a request that names no parameter of the
/// action; `param` is the parameter's name (the API answers `400` naming it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {param:?} of action {action}: {why}")]
pub struct ParamError {
    pub action: String,
    pub param: String,
    pub why: String,
}

impl From<ParamError> for ErrorBody {
    fn from(e: ParamError) -> Self {
        ErrorBody::bad_request(e.to_string())
    }
}

impl DefinedAction {
    /// The parameters of a request checked against the schema: every value as the text it is
    /// substituted as, defaults filled in. Unknown names, missing required ones and values out
    /// of their schema are errors naming the parameter.
    pub fn check_params(
        &self,
        given: &BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, String>, ParamError> {
        let err = |param: &str, why: String| ParamError {
            action: self.name.clone(),
            param: param.to_owned(),
            why,
        };
        if let Some(unknown) = given
            .keys()
            .find(|k| !self.params.iter().any(|p| &p.name == *k))
        {
            let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
            let takes = if known.is_empty() {
                "it takes no parameters".to_owned()
            } else {
                format!("it takes {}", known.join(", "))
            };
            return Err(err(unknown, format!("no such parameter; {takes}")));
        }
        let mut out = BTreeMap::new();
        for p in &self.params {
            let value = match (given.get(&p.name), &p.default) {
                (Some(v), _) => p.check(v),
                (None, Some(d)) => p.normalize(d),
                (None, None) => Err("is required".into()),
            };
            let value = value.map_err(|why| err(&p.name, why))?;
            out.insert(p.name.clone(), value);
        }
        Ok(out)
    }

    /// The deadline of a run: the request's `timeout_s` when it is within the action's own.
    /// The action's own timeout is clamped to [`MAX_ACTION_TIMEOUT_S`] whatever an agent
    /// advertises, so no requester ever waits longer.
    pub fn deadline(&self, asked: Option<u32>) -> Result<std::time::Duration, ErrorBody> {
        let own = self.timeout_s.clamp(1, MAX_ACTION_TIMEOUT_S);
        let t = asked.unwrap_or(own);
        if t == 0 || t > own {
            return Err(ErrorBody::bad_request(format!(
                "timeout_s {t} is out of range for action {}: use 1 to {own} seconds",
                self.name
            )));
        }
        Ok(std::time::Duration::from_secs(t.into()))
    }
}

impl ParamSpec {
    /// One value checked against this parameter's type; the text it is substituted as.
    pub fn check(&self, v: &Value) -> Result<String, String> {
        let text = match (self.kind, v) {
            (ParamKind::Int, Value::Number(n)) => n.to_string(),
            (ParamKind::Bool, Value::Bool(b)) => b.to_string(),
            (_, Value::String(s)) => s.clone(),
            _ => return Err(format!("must be {}", self.expects())),
        };
        self.normalize(&text)
    }

    /// A value given as text (the CLI's `-p name=value`, a default) checked against the type;
    /// the text it is substituted as (an integer as the number it is: `+5`, `007` become `5`, `7`).
    pub fn normalize(&self, s: &str) -> Result<String, String> {
        self.check_text(s)?;
        match self.kind {
            ParamKind::Int => s
                .parse::<i64>()
                .map(|n| n.to_string())
                .map_err(|_| format!("must be {}", self.expects())),
            _ => Ok(s.to_owned()),
        }
    }

    fn check_text(&self, s: &str) -> Result<(), String> {
        if s.chars().count() > MAX_EXEC_ARG_CHARS || s.contains('\0') {
            return Err(format!(
                "must be at most {MAX_EXEC_ARG_CHARS} characters without NUL"
            ));
        }
        match self.kind {
            ParamKind::String => match &self.pattern {
                Some(p) if !compile(p)?.is_match(s) => Err(format!("must match {p}")),
                // Without a pattern, a value that a program would read as an option is refused.
                None if s.starts_with('-') => Err(
                    "may not start with '-' (a program would read it as an option; give the parameter a pattern that allows it)".into(),
                ),
                _ => Ok(()),
            },
            ParamKind::Int => {
                let n: i64 = s
                    .parse()
                    .map_err(|_| format!("must be {}", self.expects()))?;
                let (lo, hi) = (self.min.unwrap_or(i64::MIN), self.max.unwrap_or(i64::MAX));
                if (lo..=hi).contains(&n) {
                    Ok(())
                } else {
                    Err(format!("must be {}", self.expects()))
                }
            }
            ParamKind::Enum if self.choices.iter().any(|c| c == s) => Ok(()),
            ParamKind::Bool if s == "true" || s == "false" => Ok(()),
            ParamKind::Enum | ParamKind::Bool => Err(format!("must be {}", self.expects())),
        }
    }

    /// What the parameter takes, as words (`an integer from 1 to 10`, `one of a, b`).
    pub fn expects(&self) -> String {
        match self.kind {
            ParamKind::String => match &self.pattern {
                Some(p) => format!("a string matching {p}"),
                None => "a string".into(),
            },
            ParamKind::Int => match (self.min, self.max) {
                (Some(lo), Some(hi)) => format!("an integer from {lo} to {hi}"),
                (Some(lo), None) => format!("an integer of at least {lo}"),
                (None, Some(hi)) => format!("an integer of at most {hi}"),
                (None, None) => "an integer".into(),
            },
            ParamKind::Enum => format!("one of {}", self.choices.join(", ")),
            ParamKind::Bool => "true or false".into(),
        }
    }

    /// Whether the schema itself is sound (the agent refuses an action whose parameter is not).
    pub fn validate(&self) -> Result<(), String> {
        if !crate::names::is_valid_agent_name(&self.name) {
            return Err(format!(
                "parameter name {:?} is invalid: use 1-63 of a-z, 0-9, '-', '_'",
                self.name
            ));
        }
        self.validate_bounds()?;
        match self.kind {
            ParamKind::String => {
                if let Some(p) = &self.pattern {
                    if p.chars().count() > MAX_PATTERN_CHARS {
                        return Err(format!(
                            "pattern is longer than {MAX_PATTERN_CHARS} characters"
                        ));
                    }
                    compile(p)?;
                }
            }
            ParamKind::Int => {
                if let (Some(lo), Some(hi)) = (self.min, self.max) {
                    if lo > hi {
                        return Err(format!("min {lo} is above max {hi}"));
                    }
                }
            }
            ParamKind::Enum if self.choices.is_empty() => {
                return Err("an enum needs choices = [\"a\", \"b\", …]".into())
            }
            ParamKind::Enum | ParamKind::Bool => {}
        }
        match &self.default {
            Some(d) => self
                .check_text(d)
                .map_err(|why| format!("its default {d:?} {why}")),
            None => Ok(()),
        }
    }
}

impl ParamSpec {
    /// Keys of another type are refused (a typo must not pass silently), and what the status
    /// carries is bounded.
    fn validate_bounds(&self) -> Result<(), String> {
        let stray = match self.kind {
            ParamKind::String => {
                self.min.is_some() || self.max.is_some() || !self.choices.is_empty()
            }
            ParamKind::Int => self.pattern.is_some() || !self.choices.is_empty(),
            ParamKind::Enum => self.pattern.is_some() || self.min.is_some() || self.max.is_some(),
            ParamKind::Bool => {
                self.pattern.is_some()
                    || self.min.is_some()
                    || self.max.is_some()
                    || !self.choices.is_empty()
            }
        };
        if stray {
            return Err("pattern is for strings, min and max for ints, choices for enums".into());
        }
        if self.description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(format!(
                "the description is longer than {MAX_DESCRIPTION_CHARS} characters"
            ));
        }
        let long = |c: &String| c.is_empty() || c.chars().count() > MAX_DESCRIPTION_CHARS;
        if self.choices.len() > MAX_CHOICES || self.choices.iter().any(long) {
            return Err(format!(
                "at most {MAX_CHOICES} choices of 1 to {MAX_DESCRIPTION_CHARS} characters"
            ));
        }
        Ok(())
    }
}

/// A pattern compiled to match the whole value, within a size bound. It is compiled alone first,
/// so that it cannot close the anchoring group (`a)|(.*` is refused, not "anything").
fn compile(pattern: &str) -> Result<regex::Regex, String> {
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("pattern {pattern:?} is not a valid regular expression: {e}"))
    };
    build(pattern)?;
    build(&format!(r"\A(?:{pattern})\z"))
}

/// Whether `arg` is a whole-element parameter reference, `{name}`; the name.
pub fn placeholder(arg: &str) -> Option<&str> {
    let name = arg.strip_prefix('{')?.strip_suffix('}')?;
    crate::names::is_valid_agent_name(name).then_some(name)
}

/// The command line with each `{name}` element replaced by the parameter's value (as one
/// element, whatever it holds).
pub fn substitute(argv: &[String], values: &BTreeMap<String, String>) -> Vec<String> {
    argv.iter()
        .map(|a| match placeholder(a).and_then(|n| values.get(n)) {
            Some(v) => v.clone(),
            None => a.clone(),
        })
        .collect()
}

/// The longest timeout an action may have, in seconds.
pub const MAX_ACTION_TIMEOUT_S: u32 = MAX_EXEC_TIMEOUT_S;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn action() -> DefinedAction {
        serde_json::from_value(json!({
            "name": "broadcast", "target": "exec", "container": "mc", "role": "operator",
            "timeout_s": 30, "source": "file",
            "params": [
                {"name": "message", "type": "string", "pattern": "[^\\n]{1,50}"},
                {"name": "times", "type": "int", "min": 1, "max": 3, "default": "1"},
                {"name": "mode", "type": "enum", "choices": ["say", "title"], "default": "say"},
                {"name": "loud", "type": "bool", "default": "false"}
            ]
        }))
        .unwrap()
    }

    fn params(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn values_are_checked_and_defaults_filled() {
        let a = action();
        let got = a
            .check_params(&params(
                json!({"message": "; rm -rf /", "times": 2, "loud": true}),
            ))
            .unwrap();
        assert_eq!(got["message"], "; rm -rf /");
        assert_eq!(got["times"], "2");
        assert_eq!(got["mode"], "say");
        assert_eq!(got["loud"], "true");
        // The CLI sends text: numbers and booleans as strings are fine.
        assert!(a
            .check_params(&params(
                json!({"message": "hi", "times": "3", "loud": "false"})
            ))
            .is_ok());
        for (bad, param) in [
            (json!({}), "message"),
            (json!({"message": "a\nb"}), "message"),
            (json!({"message": "hi", "times": 4}), "times"),
            (json!({"message": "hi", "times": 1.5}), "times"),
            (json!({"message": "hi", "mode": "shout"}), "mode"),
            (json!({"message": "hi", "loud": "yes"}), "loud"),
            (json!({"message": 5}), "message"),
            (json!({"message": "hi", "extra": 1}), "extra"),
            (json!({"message": "hi", "times": "1e3"}), "times"),
        ] {
            let e = a.check_params(&params(bad.clone())).unwrap_err();
            assert_eq!(e.param, param, "{bad}: {e}");
        }
    }

    #[test]
    fn substitution_is_whole_elements_only() {
        let argv: Vec<String> = ["rcon", "say", "{message}", "x{message}", "{nope}"]
            .map(String::from)
            .into();
        let v = BTreeMap::from([("message".to_owned(), "; rm -rf / $(id)".to_owned())]);
        assert_eq!(
            substitute(&argv, &v),
            ["rcon", "say", "; rm -rf / $(id)", "x{message}", "{nope}"]
        );
    }

    #[test]
    fn schemas_are_validated() {
        let p = |v: Value| serde_json::from_value::<ParamSpec>(v).unwrap().validate();
        assert!(p(json!({"name": "a", "type": "string", "pattern": "("})).is_err());
        assert!(p(json!({"name": "a", "type": "string", "pattern": "a{100000}"})).is_err());
        assert!(p(json!({"name": "a", "type": "int", "min": 5, "max": 1})).is_err());
        assert!(p(json!({"name": "a", "type": "enum"})).is_err());
        assert!(p(json!({"name": "A", "type": "bool"})).is_err());
        assert!(p(json!({"name": "a", "type": "int", "max": 3, "default": "9"})).is_err());
        assert!(p(json!({"name": "a", "type": "enum", "choices": ["x"]})).is_ok());
        // Keys of another type, and a pattern that would escape its anchoring.
        assert!(p(json!({"name": "a", "type": "string", "max": 3})).is_err());
        assert!(p(json!({"name": "a", "type": "int", "pattern": "x"})).is_err());
        assert!(p(json!({"name": "a", "type": "bool", "choices": ["x"]})).is_err());
        assert!(p(json!({"name": "a", "type": "string", "pattern": "a)|(.*"})).is_err());
    }

    #[test]
    fn deadline_is_within_the_actions_own() {
        let a = action();
        assert_eq!(a.deadline(None).unwrap().as_secs(), 30);
        assert_eq!(a.deadline(Some(5)).unwrap().as_secs(), 5);
        assert!(a.deadline(Some(31)).is_err());
        assert!(a.deadline(Some(0)).is_err());
    }
}
