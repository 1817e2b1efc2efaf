//! bollard's models to `zedops-proto`'s (pure, so unit-tested).

use super::*;

/// Serde's name for an enum value (bollard's enums serialize to Docker's spelling).
fn enum_str<T: Serialize>(v: &T) -> Option<String> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// Our state of a bollard state enum (a list row's or an inspect's); `unknown` when absent.
pub(super) fn state_of<T: Serialize>(v: Option<&T>) -> ContainerState {
    v.and_then(enum_str)
        .map(|st| ContainerState::from_docker(&st))
        .unwrap_or(ContainerState::Unknown)
}

pub(super) fn from_summary(s: ContainerSummary) -> Option<Container> {
    let id = s.id?;
    let name = s
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_else(|| id.chars().take(12).collect());
    let state = state_of(s.state.as_ref());
    let status = s.status.unwrap_or_default();
    let health = s
        .health
        .as_ref()
        .and_then(|h| h.status.as_ref())
        .and_then(enum_str)
        .filter(|h| h != "none")
        .or_else(|| health_from_status(&status));
    let created_at = s
        .created
        .and_then(|t| Utc.timestamp_opt(t, 0).single())
        .unwrap_or_default();
    let mut ports: Vec<Port> = s
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| Port {
            private_port: p.private_port,
            public_port: p.public_port,
            protocol: p
                .typ
                .as_ref()
                .and_then(enum_str)
                .unwrap_or_else(|| "tcp".into()),
            ip: p.ip.filter(|ip| !ip.is_empty()),
        })
        .collect();
    ports.sort_by(|a, b| {
        (a.private_port, a.public_port, &a.ip).cmp(&(b.private_port, b.public_port, &b.ip))
    });
    Some(Container {
        short_id: id.chars().take(12).collect(),
        id,
        name,
        image: s.image.unwrap_or_default(),
        image_id: s.image_id.unwrap_or_default(),
        command: s.command.unwrap_or_default(),
        state,
        status,
        health,
        created_at,
        ports,
        labels: s
            .labels
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
    })
}

/// Older engines only say "(healthy)" inside the status text.
fn health_from_status(status: &str) -> Option<String> {
    ["healthy", "unhealthy", "health: starting"]
        .iter()
        .find(|h| status.contains(&format!("({h})")))
        .map(|h| h.trim_start_matches("health: ").to_owned())
}

fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s?).ok()?.with_timezone(&Utc);
    // Docker reports "0001-01-01T00:00:00Z" for "never".
    (t.timestamp() > 0).then_some(t)
}

pub(super) fn detail(container: Container, ins: ContainerInspectResponse) -> ContainerDetail {
    let state = ins.state.unwrap_or_default();
    let mut env_names: Vec<String> = ins
        .config
        .as_ref()
        .and_then(|c| c.env.as_ref())
        .map(|env| {
            env.iter()
                .map(|kv| kv.split('=').next().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    env_names.sort();
    let mounts = ins
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| Mount {
            kind: m
                .typ
                .as_ref()
                .and_then(enum_str)
                .unwrap_or_else(|| "bind".into()),
            source: m.source.filter(|s| !s.is_empty()),
            destination: m.destination.unwrap_or_default(),
            read_write: m.rw.unwrap_or(false),
        })
        .collect();
    let mut networks: Vec<NetworkAttachment> = ins
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| NetworkAttachment {
            name,
            ip_address: ep.ip_address.filter(|ip| !ip.is_empty()),
        })
        .collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    ContainerDetail {
        container,
        started_at: parse_time(state.started_at.as_deref()),
        finished_at: parse_time(state.finished_at.as_deref()),
        exit_code: state.exit_code,
        restart_count: ins.restart_count.unwrap_or(0),
        mounts,
        networks,
        env_names,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn health_text() {
        assert_eq!(
            health_from_status("Up 2 minutes (healthy)").as_deref(),
            Some("healthy")
        );
        assert_eq!(
            health_from_status("Up (health: starting)").as_deref(),
            Some("starting")
        );
        assert_eq!(health_from_status("Up 2 minutes"), None);
    }
}
