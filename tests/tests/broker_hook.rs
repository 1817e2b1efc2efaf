//! The broker's authentication and ACL hook over HTTP, as brokers' auth plugins call it: rmqtt's
//! form fields (`access`), EMQX's JSON (`action`), the hook's own secret, and a server without the
//! hook. A `zedops serve --broker-auth-hook` in front of Debian's Mosquitto (which it only logs in
//! to); the cluster tests (`cluster.rs`) show a real broker asking it.

use std::time::Duration;

use anyhow::{ensure, Context};
use serde_json::{json, Value};
use zedops_client::{Client, EnrollRequest, NewAgent, NewMqttUser};
use zedops_proto::sign::KeyPair;
use zedops_tests::procs::{zedops_bin, Mosquitto, Serve, TempDir};
use zedops_tests::{init_logs, unique};

const SECRET: &str = "broker-hook-test-secret-0123";
const LOGIN: (&str, &str) = ("zedops-api", "hook-test-login");

/// A server answering the hook on `mosq`, with `extra` flags.
async fn hooked(mosq: &Mosquitto, extra: &[&str]) -> anyhow::Result<Serve> {
    let broker = format!("mqtt://{}", mosq.addr);
    let mut args = vec![
        "--broker",
        &broker,
        "--broker-username",
        LOGIN.0,
        "--broker-password",
        LOGIN.1,
    ];
    args.extend(extra);
    let serve = Serve::start(&args, "warn")?;
    serve.ready().await?;
    Ok(serve)
}

/// A POST to the hook: `form` as a form when it is a string, else as JSON; with `secret` as the
/// bearer when given. Returns the status, the `X-Cache` header and the body.
async fn ask(
    serve: &Serve,
    path: &str,
    body: Value,
    secret: Option<&str>,
) -> anyhow::Result<(u16, Option<String>, Value)> {
    let url = format!("{}/api/v1/broker/{path}", serve.http);
    let mut rb = reqwest::Client::new()
        .post(url)
        .timeout(Duration::from_secs(10));
    rb = match &body {
        Value::String(form) => rb
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone()),
        _ => rb.json(&body),
    };
    if let Some(s) = secret {
        rb = rb.bearer_auth(s);
    }
    let r = rb.send().await?;
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, cache, r.json().await.unwrap_or(Value::Null)))
}

/// Whether the hook answered `allow` (and 200).
async fn allows(serve: &Serve, path: &str, body: Value) -> anyhow::Result<bool> {
    let (status, _, v) = ask(serve, path, body.clone(), Some(SECRET)).await?;
    ensure!(status == 200, "{path} {body}: HTTP {status} {v}");
    match v["result"].as_str() {
        Some("allow") => Ok(true),
        Some("deny") => Ok(false),
        _ => anyhow::bail!("{path} {body}: no verdict in {v}"),
    }
}

/// An agent registered and enrolled through the API: its name and MQTT password.
async fn enrolled(serve: &Serve) -> anyhow::Result<(String, String)> {
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    let name = unique("hk");
    let new = NewAgent {
        name: name.clone(),
        ttl_s: None,
    };
    let token = admin.register_agent(&new).await?.token;
    let key = KeyPair::from_seed(rand::random());
    let req = EnrollRequest {
        name: name.clone(),
        token,
        public_key: key.public_hex(),
    };
    let creds = admin.enroll(&req).await?;
    Ok((name, creds.mqtt_password))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_answers_rmqtt_and_emqx_only_with_its_secret() -> anyhow::Result<()> {
    init_logs();
    let mosq = Mosquitto::start().await?;
    let serve = hooked(
        &mosq,
        &["--broker-auth-hook", "--broker-auth-hook-secret", SECRET],
    )
    .await?;
    let (a, pw) = enrolled(&serve).await?;
    let a_id = format!("zedops-agent-{a}");

    // Without the secret, or with another: 401 with what to send, and no answer.
    let q = json!({"clientid": a_id, "username": a, "password": pw});
    for secret in [None, Some("not-the-secret-at-all")] {
        let (status, _, v) = ask(&serve, "auth", q.clone(), secret).await?;
        ensure!(status == 401, "secret {secret:?}: HTTP {status} {v}");
        let says = v["message"].as_str().unwrap_or_default();
        ensure!(says.contains("--broker-auth-hook-secret"), "{v}");
        ensure!(
            v.get("result").is_none(),
            "an answer without the secret: {v}"
        );
    }

    // Logins, as rmqtt's form and as EMQX's JSON.
    let form = |id: &str, user: &str, pass: &str| {
        Value::String(format!("clientid={id}&username={user}&password={pass}"))
    };
    ensure!(
        allows(&serve, "auth", form(&a_id, &a, &pw)).await?,
        "A's login"
    );
    ensure!(allows(&serve, "auth", q.clone()).await?, "A's login (JSON)");
    let wrong = json!({"clientid": a_id, "username": a, "password": "nope"});
    ensure!(!allows(&serve, "auth", wrong).await?, "a wrong password");
    let stolen = json!({"clientid": "zedops-agent-other", "username": a, "password": pw});
    ensure!(!allows(&serve, "auth", stolen).await?, "another agent's id");
    let own = json!({"clientid": "zedops-api-7", "username": LOGIN.0, "password": LOGIN.1});
    let (_, _, v) = ask(&serve, "auth", own, Some(SECRET)).await?;
    ensure!(
        v["result"] == "allow" && v["is_superuser"] == true && v["superuser"] == true,
        "the server's own login: {v}"
    );

    // ACLs: EMQX's `action` in JSON; rmqtt's `access` in a form, with X-Cache on its own status.
    let acl = |topic: String, action: &str| json!({"clientid": a_id, "username": a, "topic": topic, "action": action});
    let own_status = zedops_proto::topics::status(&a);
    let own_req = format!("$share/g/zedops/v1/agents/{a}/req/+");
    ensure!(allows(&serve, "acl", acl(own_status.clone(), "publish")).await?);
    ensure!(allows(&serve, "acl", acl(own_req, "subscribe")).await?);
    let theirs = "zedops/v1/agents/other/req/+".to_owned();
    ensure!(!allows(&serve, "acl", acl(theirs, "subscribe")).await?);
    let their_status = zedops_proto::topics::status("other");
    ensure!(!allows(&serve, "acl", acl(their_status, "publish")).await?);
    let their_config = "homeassistant/switch/zedops_other/w_00000000/config".to_owned();
    ensure!(!allows(&serve, "acl", acl(their_config, "publish")).await?);
    let rmqtt = format!("clientid={a_id}&username={a}&topic={own_status}&access=2");
    let (status, cache, v) = ask(&serve, "acl", Value::String(rmqtt), Some(SECRET)).await?;
    ensure!(status == 200 && v["result"] == "allow", "{v}");
    ensure!(cache.as_deref() == Some("300000"), "X-Cache: {cache:?}");
    // MQTT users: a read-only one reads and may not command; one with Home Assistant command
    // rights may send `/set` commands.
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    let set = zedops_proto::topics::container_set(&a, "web");
    for ha_commands in [false, true] {
        let new = NewMqttUser {
            name: unique("hku"),
            ha_commands,
        };
        let u = admin.create_mqtt_user(&new).await?;
        let (id, user) = (format!("ha-{}", u.username), u.username.clone());
        let login = json!({"clientid": id, "username": user, "password": u.password});
        ensure!(allows(&serve, "auth", login).await?, "{user}'s login");
        let q = |topic: &str, action: &str| json!({"clientid": id, "username": user, "topic": topic, "action": action});
        ensure!(allows(&serve, "acl", q("zedops/v1/agents/+/status", "subscribe")).await?);
        let commands = allows(&serve, "acl", q(&set, "publish")).await?;
        ensure!(
            commands == ha_commands,
            "{user} (ha_commands {ha_commands}): /set {commands}"
        );
    }

    // A question that names neither access nor action is answered no.
    let unreadable = json!({"clientid": a_id, "username": a, "topic": "x"});
    ensure!(!allows(&serve, "acl", unreadable).await?);

    // A server without the hook: 404, with or without a secret.
    let plain = hooked(&mosq, &[]).await?;
    for secret in [None, Some(SECRET)] {
        let (status, _, v) = ask(&plain, "auth", q.clone(), secret).await?;
        ensure!(
            status == 404,
            "without --broker-auth-hook: HTTP {status} {v}"
        );
    }
    Ok(())
}

/// `--broker-auth-hook` without a secret, or with a short one, is refused at start with what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_needs_a_secret() -> anyhow::Result<()> {
    init_logs();
    let mosq = Mosquitto::start().await?;
    let home = TempDir::new("hook-secret")?;
    let broker = format!("mqtt://{}", mosq.addr);
    for extra in [&[][..], &["--broker-auth-hook-secret", "short"][..]] {
        let out = tokio::process::Command::new(zedops_bin()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--broker", &broker])
            .args(["--broker-username", LOGIN.0, "--broker-password", LOGIN.1])
            .arg("--broker-auth-hook")
            .args(extra)
            .env("XDG_DATA_HOME", home.path.join("data"))
            .env("XDG_CONFIG_HOME", home.path.join("config"))
            .env_remove("ZEDOPS_BROKER_AUTH_HOOK_SECRET")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), out)
            .await
            .context("zedops serve did not exit")??;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "started with {extra:?}: {err}");
        ensure!(
            err.contains("--broker-auth-hook-secret") && err.contains("openssl rand"),
            "{extra:?}: {err}"
        );
    }
    Ok(())
}
