//! Home Assistant and operator-defined actions marked `ha = true`: a `button` that runs the
//! action (any payload on `…/actions/{name}/run`) and a `sensor` with the last result of a run
//! from that button (retained on `…/actions/{name}/result`: exit code, whether it timed out,
//! duration and time). Both belong to the agent's device (label actions too: container entities
//! have no device of their own).

use std::collections::BTreeMap;

use chrono::Utc;
use zedops_proto::defined::{DefinedAction, RunArgs};
use zedops_proto::ops::{ActionRun, CommandResult, Op};

use super::*;

/// `action_{name}_{hash}`: the hash is of `agent/action:name`, which no container's object id
/// can be the hash of (a container name has no `:`).
pub fn action_object_id(agent: &str, action: &str) -> String {
    let h = discovery::fnv1a32(format!("{agent}/action:{action}").as_bytes());
    format!("action_{}_{h:08x}", sanitize(action))
}

/// The discovery topics of an action's button and sensor.
pub fn action_topics(prefix: &str, agent: &str, action: &str) -> [String; 2] {
    let (node, id) = (node_id(agent), action_object_id(agent, action));
    [
        format!("{prefix}/button/{node}/{id}/config"),
        format!("{prefix}/sensor/{node}/{id}/config"),
    ]
}

const RESULT_TEMPLATE: &str = "{{ value_json.exit_code if value_json.exit_code is not none else ('timeout' if value_json.timed_out else 'error') }}";

/// The discovery configs of an action's button and sensor.
pub fn action_configs(agent: &str, a: &DefinedAction) -> [Value; 2] {
    let id = action_object_id(agent, &a.name);
    let base = discovery::common(agent, &format!("zedops_{}_{id}", sanitize(agent)));
    let label = if a.description.is_empty() {
        a.name.clone()
    } else {
        a.description.clone()
    };
    let mut button = base.clone();
    let mut sensor = base;
    let unique = format!("zedops_{}_{id}", sanitize(agent));
    if let (Some(b), Some(s)) = (button.as_object_mut(), sensor.as_object_mut()) {
        b.extend(
            json!({
                "unique_id": format!("{unique}_button"),
                "name": label,
                "icon": "mdi:play-circle-outline",
                "command_topic": topics::action_run(agent, &a.name),
                "payload_press": "PRESS",
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        s.extend(
            json!({
                "unique_id": format!("{unique}_result"),
                "name": format!("{label} last result"),
                "icon": "mdi:console",
                "state_topic": topics::action_result(agent, &a.name),
                "value_template": RESULT_TEMPLATE,
                "json_attributes_topic": topics::action_result(agent, &a.name),
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
    }
    [button, sensor]
}

/// What the result sensor shows of a run.
pub fn result_payload(outcome: &Result<CommandResult, ErrorBody>) -> Value {
    let finished_at = Utc::now().to_rfc3339();
    match outcome {
        Ok(r) => json!({
            "ok": r.exit_code == Some(0),
            "exit_code": r.exit_code,
            "timed_out": r.timed_out,
            "truncated": r.truncated,
            "duration_ms": r.duration_ms,
            "finished_at": finished_at,
        }),
        Err(e) => json!({
            "ok": false,
            "exit_code": null,
            "timed_out": false,
            "error": e.to_string(),
            "finished_at": finished_at,
        }),
    }
}

impl Ha {
    /// Follows the actions served: announces buttons of new `ha` actions, removes those gone.
    /// An action in a container labelled `zedops.ha=false` gets none (the container is not
    /// exposed to Home Assistant at all).
    pub fn sync_actions(&mut self, actions: &[DefinedAction], current: Option<&[Container]>) {
        let hidden = |a: &DefinedAction| {
            let c = a.container.as_deref();
            current
                .unwrap_or_default()
                .iter()
                .any(|k| Some(k.name.as_str()) == c && !is_exposed(k))
        };
        let want: BTreeMap<String, DefinedAction> = actions
            .iter()
            .filter(|a| a.ha && !hidden(a))
            .map(|a| (a.name.clone(), a.clone()))
            .collect();
        if want == self.buttons {
            return;
        }
        let gone: Vec<String> = self
            .buttons
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            for topic in action_topics(&self.prefix, &self.agent, &name) {
                self.topics.remove(&topic);
                self.send(topic, Vec::new());
            }
            // Its last result too: nothing shows it any more.
            self.send(topics::action_result(&self.agent, &name), Vec::new());
        }
        self.buttons = want;
        self.announce_actions();
    }

    /// Publishes the configs of every button (after a CONNACK and Home Assistant's birth too).
    pub(super) fn announce_actions(&mut self) {
        let buttons: Vec<DefinedAction> = self.buttons.values().cloned().collect();
        for a in &buttons {
            let topics = action_topics(&self.prefix, &self.agent, &a.name);
            for (topic, cfg) in topics.into_iter().zip(action_configs(&self.agent, a)) {
                self.send(topic.clone(), serde_json::to_vec(&cfg).unwrap_or_default());
                self.topics.insert(topic);
            }
        }
    }

    /// A press on `…/actions/{name}/run`: runs the action when it has a button (no parameters:
    /// defaults only), publishes the result for the sensor and logs the audit line.
    pub fn press(&self, name: &str, p: &Publish, ctx: &Arc<Ctx>, registry: &Arc<Registry>) {
        let agent = self.agent.clone();
        if p.retain || p.payload.len() > MAX_COMMAND_BYTES || !self.buttons.contains_key(name) {
            let shown: String = name.chars().take(64).collect();
            warn!(source = "mqtt", %agent, action = ?shown, retained = p.retain, "ignoring an action button press: retained, too large, or not an action with a Home Assistant button");
            return;
        }
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            warn!(source = "mqtt", %agent, action = %name, "ignoring an action button press: {MAX_INFLIGHT} Home Assistant commands are running");
            return;
        };
        let (ctx, client, registry) = (ctx.clone(), self.client.clone(), registry.clone());
        let name = name.to_owned();
        tokio::spawn(async move {
            let _permit = permit;
            let args = RunArgs {
                action: name.clone(),
                ..RunArgs::default()
            };
            let payload = serde_json::to_vec(&args).unwrap_or_default();
            let outcome: Result<CommandResult, ErrorBody> = registry
                .dispatch(ctx, ActionRun::NAME, &payload)
                .await
                .into_result();
            match &outcome {
                Ok(r) => {
                    info!(source = "mqtt", %agent, action = %name, exit_code = ?r.exit_code, timed_out = r.timed_out, "Home Assistant ran an action (audited as coming from MQTT)")
                }
                Err(e) => {
                    info!(source = "mqtt", %agent, action = %name, outcome = %e.code, message = %e.message, "Home Assistant action failed (audited as coming from MQTT)")
                }
            }
            let body = serde_json::to_vec(&result_payload(&outcome)).unwrap_or_default();
            let topic = topics::action_result(&agent, &name);
            if let Err(e) = client.try_publish(topic.clone(), QoS::AtLeastOnce, true, body) {
                warn!(%topic, error = %e, "could not publish the action's result");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_ids_never_meet_container_ids() {
        let a = action_object_id("maestro", "save");
        assert!(a.starts_with("action_save_"), "{a}");
        assert_ne!(a, object_id("maestro", "action_save"));
        let [b, s] = action_topics("homeassistant", "maestro", "save");
        assert!(b.starts_with("homeassistant/button/zedops_maestro/action_save_"));
        assert!(s.starts_with("homeassistant/sensor/zedops_maestro/action_save_"));
    }

    #[test]
    fn configs_point_at_the_run_and_result_topics() {
        let a: DefinedAction = serde_json::from_value(json!({
            "name": "save", "description": "Save the world", "target": "exec",
            "container": "mc", "role": "operator", "ha": true, "timeout_s": 60, "source": "file"
        }))
        .unwrap();
        let [b, s] = action_configs("maestro", &a);
        assert_eq!(
            b["command_topic"],
            "zedops/v1/agents/maestro/actions/save/run"
        );
        assert_eq!(b["name"], "Save the world");
        assert_eq!(
            s["state_topic"],
            "zedops/v1/agents/maestro/actions/save/result"
        );
        assert_eq!(b["device"]["identifiers"][0], "zedops_maestro");
        assert_ne!(b["unique_id"], s["unique_id"]);
    }
}
