//! Home Assistant's side, with clients we did not write: `mosquitto_sub`/`mosquitto_pub` over
//! MQTT 3.1.1 (what Home Assistant speaks to the embedded broker's compatibility listener), and
//! its templates rendered by Jinja2, Home Assistant's template engine.

use std::process::Stdio;

use anyhow::{bail, ensure, Context};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::unique;

/// One line of `mosquitto_sub -F '%r %t %p'`.
#[derive(Debug, Clone)]
pub struct Seen {
    pub retain: bool,
    pub topic: String,
    pub payload: String,
}

/// Where and as whom Home Assistant connects: the MQTT 3.1.1 listener, as an MQTT user with
/// Home Assistant command rights (`zedops mqtt-user add ha --ha-commands`).
#[derive(Clone)]
pub struct Mqtt311 {
    pub port: u16,
    pub user: String,
    pub pass: String,
}

impl Mqtt311 {
    /// Home Assistant's way into `serve`: its MQTT 3.1.1 listener, as a new MQTT user (with
    /// `/set` rights when `ha_commands`).
    pub async fn user_of(
        serve: &crate::procs::Serve,
        admin: &zedops_client::Client,
        ha_commands: bool,
    ) -> anyhow::Result<Self> {
        let user = admin
            .create_mqtt_user(&zedops_client::NewMqttUser {
                name: unique("ha"),
                ha_commands,
            })
            .await?;
        Ok(Self {
            port: serve.mqtt311.context("no MQTT 3.1.1 listener")?.port(),
            user: user.username,
            pass: user.password,
        })
    }

    pub fn args(&self) -> Vec<String> {
        let port = self.port.to_string();
        [
            "-V",
            "mqttv311",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            &self.user,
            "-P",
            &self.pass,
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// `mosquitto_sub` over MQTT 3.1.1 for `secs` seconds.
pub async fn mosquitto_sub(m: &Mqtt311, filter: &str, secs: u32) -> anyhow::Result<Vec<Seen>> {
    let out = tokio::process::Command::new("mosquitto_sub")
        .args(m.args())
        .args(["-t", filter, "-F", "%r %t %p", "-W", &secs.to_string()])
        .args(["-i", &unique("ha-sub")])
        .output()
        .await
        .context("running mosquitto_sub (install mosquitto-clients: scripts/provision.sh)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.is_empty() && !out.stderr.is_empty() {
        bail!(
            "mosquitto_sub failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let retain = parts.next()? == "1";
            let topic = parts.next()?.to_owned();
            let payload = parts.next().unwrap_or_default().to_owned();
            Some(Seen {
                retain,
                topic,
                payload,
            })
        })
        .collect())
}

/// `mosquitto_pub -V mqttv311` with extra arguments (`-m WORD`, `-f FILE`, `-r`, `-n`…).
pub async fn mosquitto_pub(m: &Mqtt311, topic: &str, extra: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("mosquitto_pub")
        .args(m.args())
        .args(["-q", "1", "-t", topic])
        .args(extra)
        .output()
        .await
        .context("running mosquitto_pub")?;
    ensure!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Renders Home Assistant templates with Jinja2, the way HA's MQTT integration does: `value` is
/// the payload, `value_json` the payload parsed as JSON (undefined when it is not JSON).
pub async fn render(items: &[(&str, &str)]) -> anyhow::Result<Vec<String>> {
    const SCRIPT: &str = r#"
import json, sys, jinja2
env = jinja2.Environment()
out = []
for template, payload in json.load(sys.stdin):
    ctx = {"value": payload}
    try:
        ctx["value_json"] = json.loads(payload)
    except Exception:
        pass
    out.append(env.from_string(template).render(**ctx).strip())
print(json.dumps(out))
"#;
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running python3 (scripts/provision.sh installs it with Jinja2)")?;
    let input = serde_json::to_vec(&items)?;
    child
        .stdin
        .take()
        .context("python3 stdin")?
        .write_all(&input)
        .await?;
    let out = child.wait_with_output().await?;
    ensure!(
        out.status.success(),
        "Jinja2 rendering failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

pub async fn render_one(template: &Value, payload: &str) -> anyhow::Result<String> {
    let t = template.as_str().context("template is not a string")?;
    render(&[(t, payload)]).await?.pop().context("no rendering")
}
