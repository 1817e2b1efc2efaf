//! `/set` commands: the payload parsed, Home Assistant's rules (exposed, protected, the agent's
//! own container), the action run through the registry, the audit line and the result topic.

use super::*;

/// The actions Home Assistant (or any MQTT client) may send on `…/containers/{name}/set`: rows
/// of the action table (`zedops_proto::ACTIONS`).
pub const COMMANDS: [Action; 3] = [Action::Start, Action::Stop, Action::Restart];

/// Why a `/set` payload was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    TooLarge(usize),
    NotText,
    Unknown(String),
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge(n) => write!(
                f,
                "the payload is {n} bytes; commands are at most {MAX_COMMAND_BYTES}"
            ),
            Self::NotText => f.write_str("the payload is not UTF-8 text"),
            Self::Unknown(w) => write!(f, "{w:?} is not a command: use start, stop or restart"),
        }
    }
}

/// Parses a `/set` payload: `start`, `stop` or `restart`, trimmed, case-insensitive.
pub fn parse_command(payload: &[u8]) -> Result<Action, Ignored> {
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(Ignored::TooLarge(payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| Ignored::NotText)?;
    let word = text.trim();
    if word.chars().any(char::is_control) {
        return Err(Ignored::NotText);
    }
    let lower = word.to_ascii_lowercase();
    COMMANDS
        .into_iter()
        .find(|a| a.as_str() == lower)
        .ok_or_else(|| Ignored::Unknown(word.chars().take(32).collect()))
}

/// Looks the container up by exact name (never by ID prefix: the topic names it), applies the
/// Home Assistant rules, then runs the action's op through the registry, as a request would.
pub(super) async fn execute(
    ctx: Arc<Ctx>,
    registry: &Registry,
    own: &OwnContainer,
    name: &str,
    cmd: Action,
) -> Result<ActionResult, ErrorBody> {
    let agent = ctx.agent.clone();
    let all = ctx.driver.list(true).await?;
    let c = all.iter().find(|c| c.name == name).ok_or_else(|| {
        ErrorBody::not_found(format!("no container named {name} on agent {agent}"))
    })?;
    let forbidden = |why: String| Err(ErrorBody::new(ErrorCode::Forbidden, why));
    if !is_exposed(c) {
        return forbidden(format!(
            "container {name} on agent {agent} is labelled {LABEL_HA}=false: Home Assistant cannot control it"
        ));
    }
    if is_protected(c) {
        return forbidden(format!(
            "container {name} on agent {agent} is labelled {LABEL_PROTECT}=true: Home Assistant may not {} it; use the zedops CLI or API",
            cmd.as_str()
        ));
    }
    if cmd.spec().stops && own.matches(c) {
        return forbidden(format!(
            "container {name} runs agent {agent} itself: Home Assistant may not {} it; use the zedops CLI or docker on the host",
            cmd.as_str()
        ));
    }
    let by_id = ContainerRef::new(c.id.clone()).map_err(|e| ErrorBody::internal(e.to_string()))?;
    let payload = ActionRequest::new(cmd, by_id).to_payload()?;
    registry
        .dispatch(ctx, cmd.op_name(), &payload)
        .await
        .into_result()
}

/// The audit record of a command from MQTT (there is no audit store yet).
pub(super) fn audit(
    agent: &str,
    container: &str,
    cmd: Action,
    outcome: &Result<ActionResult, ErrorBody>,
) {
    match outcome {
        Ok(r) => info!(
            source = "mqtt",
            %agent,
            %container,
            action = cmd.as_str(),
            outcome = if r.changed { "changed" } else { "unchanged" },
            state = %r.container.state,
            "Home Assistant command executed (audited as coming from MQTT)"
        ),
        Err(e) => info!(
            source = "mqtt",
            %agent,
            %container,
            action = cmd.as_str(),
            outcome = %e.code,
            message = %e.message,
            "Home Assistant command refused or failed (audited as coming from MQTT)"
        ),
    }
}

pub(super) fn publish_result(client: &AsyncClient, topic: String, reply: Reply) {
    if let Err(e) = client.try_publish(topic.clone(), QoS::AtMostOnce, false, reply.to_bytes()) {
        warn!(%topic, error = %e, "could not publish the command's result");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse_command(b"start"), Ok(Action::Start));
        assert_eq!(parse_command(b" STOP\n"), Ok(Action::Stop));
        assert_eq!(parse_command(b"Restart"), Ok(Action::Restart));
        assert!(matches!(parse_command(b"kill"), Err(Ignored::Unknown(_))));
        assert!(matches!(parse_command(b""), Err(Ignored::Unknown(_))));
        assert!(matches!(parse_command(b"ON"), Err(Ignored::Unknown(_))));
        assert_eq!(parse_command(b"\xff\xfe\x00"), Err(Ignored::NotText));
        assert_eq!(parse_command(b"st\0op"), Err(Ignored::NotText));
        assert_eq!(
            parse_command(&vec![b'a'; 1 << 20]),
            Err(Ignored::TooLarge(1 << 20))
        );
        assert!(parse_command(
            &[b' '; 60]
                .iter()
                .chain(b"stop")
                .copied()
                .collect::<Vec<_>>()
        )
        .is_ok());
    }
}
