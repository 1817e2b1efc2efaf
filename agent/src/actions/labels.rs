//! Actions carried by a container's labels (`docs/actions.md` § Labels), so that a compose file
//! can bring its own: `zedops.action.<name>.command=rcon-cli save` (split shell-style, never run
//! through a shell) plus optional `.description`, `.role`, `.ha`, `.timeout` and `.confirm`. They
//! run in the container that carries them and take no parameters.

use std::collections::BTreeMap;

use zedops_proto::defined::{DefinedAction, Target};
use zedops_proto::http::Role;
use zedops_proto::Container;

use super::{parse_timeout, Definition, Refused};

pub const LABEL_PREFIX: &str = "zedops.action.";

/// The valid label actions of the containers, and the refusals.
pub fn label_actions(containers: &[Container]) -> (Vec<Definition>, Vec<Refused>) {
    let (mut defs, mut refused) = (Vec::new(), Vec::new());
    for c in containers {
        for (name, keys) in grouped(c) {
            let origin = format!("label {LABEL_PREFIX}{name}.* of container {}", c.name);
            match definition(c, &name, &keys, origin.clone()) {
                Ok(d) => defs.push(d),
                Err(message) => refused.push(Refused { origin, message }),
            }
        }
    }
    (defs, refused)
}

/// The action labels of the containers that have any, by container name.
pub type ActionLabels = Vec<(String, Vec<(String, String)>)>;

/// The action labels of the containers that have any (what [`label_actions`] reads), by
/// container name: compared to tell when they must be read again.
pub fn labels_of(containers: &[Container]) -> ActionLabels {
    containers
        .iter()
        .filter_map(|c| {
            let l: Vec<(String, String)> = c
                .labels
                .iter()
                .filter(|(k, _)| k.starts_with(LABEL_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (!l.is_empty()).then(|| (c.name.clone(), l))
        })
        .collect()
}

/// The container's action labels, by action name then key.
fn grouped(c: &Container) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (label, value) in &c.labels {
        let Some(rest) = label.strip_prefix(LABEL_PREFIX) else {
            continue;
        };
        let (name, key) = rest.rsplit_once('.').unwrap_or((rest, ""));
        out.entry(name.to_owned())
            .or_default()
            .insert(key.to_owned(), value.clone());
    }
    out
}

fn definition(
    c: &Container,
    name: &str,
    keys: &BTreeMap<String, String>,
    origin: String,
) -> Result<Definition, String> {
    const KEYS: [&str; 6] = ["command", "description", "role", "ha", "timeout", "confirm"];
    if let Some(k) = keys.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown key {k:?}: use {}",
            KEYS.map(|k| format!(".{k}")).join(", ")
        ));
    }
    let line = keys.get("command").ok_or("no .command label")?;
    let command = shlex::split(line)
        .ok_or_else(|| format!("command {line:?} has an unclosed quote or a trailing backslash"))?;
    let flag = |k: &str| match keys.get(k).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if ["true", "1", "yes", "on"].contains(&v.as_str()) => Ok(true),
        Some(v) if ["false", "0", "no", "off"].contains(&v.as_str()) => Ok(false),
        Some(v) => Err(format!(".{k} must be true or false, not {v:?}")),
    };
    let role = match keys.get("role") {
        None => Role::Operator,
        Some(r) => r
            .trim()
            .parse()
            .map_err(|e: zedops_proto::http::UnknownRole| e.to_string())?,
    };
    let timeout_s = match keys.get("timeout") {
        None => zedops_proto::ops::DEFAULT_EXEC_TIMEOUT_S,
        Some(t) => {
            parse_timeout(t).ok_or(".timeout must be seconds or a duration such as 30s or 5m")?
        }
    };
    let d = Definition {
        info: DefinedAction {
            name: name.to_owned(),
            description: keys.get("description").cloned().unwrap_or_default(),
            target: Target::Exec,
            container: Some(c.name.clone()),
            params: Vec::new(),
            role,
            confirm: flag("confirm")?,
            ha: flag("ha")?,
            timeout_s,
            source: "label".into(),
        },
        command,
        workdir: None,
        user: None,
        env: Vec::new(),
        origin,
    };
    d.validate()?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(labels: &[(&str, &str)]) -> Container {
        let mut c: Container = serde_json::from_value(serde_json::json!({
            "id": "a".repeat(64), "short_id": "a".repeat(12), "name": "mc", "image": "i",
            "image_id": "sha256:1", "command": "sh", "state": "running", "status": "Up",
            "health": null, "created_at": "2026-01-10T02:25:00Z", "ports": [], "labels": {}
        }))
        .unwrap();
        for (k, v) in labels {
            c.labels.insert((*k).into(), (*v).into());
        }
        c
    }

    #[test]
    fn labels_define_actions_split_without_a_shell() {
        let c = container(&[
            (
                "zedops.action.save.command",
                "rcon-cli 'save all' ; rm -rf /",
            ),
            ("zedops.action.save.description", "Save"),
            ("zedops.action.save.ha", "true"),
            ("zedops.action.save.timeout", "2m"),
            ("zedops.action.bad.command", "x"),
            ("zedops.action.bad.colour", "red"),
            ("other.label", "x"),
        ]);
        let (defs, refused) = label_actions(&[c]);
        assert_eq!(defs.len(), 1);
        let d = &defs[0];
        assert_eq!(d.command, ["rcon-cli", "save all", ";", "rm", "-rf", "/"]);
        assert_eq!(d.info.container.as_deref(), Some("mc"));
        assert!(d.info.ha);
        assert_eq!(d.info.timeout_s, 120);
        assert_eq!(d.info.source, "label");
        assert_eq!(refused.len(), 1);
        assert!(refused[0].message.contains("colour"), "{}", refused[0]);
        assert!(refused[0].origin.contains("container mc"));
    }

    #[test]
    fn bad_label_values_are_refused() {
        for (k, v) in [
            ("zedops.action.x.command", "'unclosed"),
            ("zedops.action.x.role", "viewer"),
            ("zedops.action.x.ha", "maybe"),
        ] {
            let mut labels = vec![(k, v)];
            if k != "zedops.action.x.command" {
                labels.push(("zedops.action.x.command", "true"));
            }
            let (defs, refused) = label_actions(&[container(&labels)]);
            assert!(defs.is_empty() && refused.len() == 1, "{k}={v}");
        }
    }
}
