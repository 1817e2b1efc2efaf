//! Issue 16, items 1 and 3: operator-defined actions on the secured default (`zedops serve` with
//! its enrolled, signing local agent, tokens, an authenticated broker) and real Docker, from every
//! surface: HTTP (the typed client), the CLI, MQTT with `mosquitto_rr` (an agent that accepts
//! unsigned requests), Home Assistant's button over MQTT 3.1.1 with `mosquitto_pub`, and the
//! dashboard in Chromium (`tests/browser/actions.mjs`). Each run changes what Docker or the file
//! system shows; labels appear and disappear with their containers; parameters are one literal
//! argument each and are checked at the API; roles, deadlines and output bounds hold; a broken
//! definitions file leaves the valid ones served.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context};
use serde_json::json;
use zedops_client::{Client, ClientError, ErrorCode, NewToken, Role};
use zedops_proto::http::{NewAgent, NewMqttUser, RunActionRequest};
use zedops_proto::ops::CommandResult;
use zedops_proto::topics;
use zedops_tests::ha::{mosquitto_pub, mosquitto_sub, render_one, Mqtt311};
use zedops_tests::procs::{spawn_agent_process, zedops_bin, Serve, TempDir};
use zedops_tests::{eventually, init_logs, unique, Docker, TestContainer};

/// The definitions of the test: `{c}` is the container, `{dir}` a directory of the test.
const ACTIONS: &str = r#"
[action.touch]
description = "Make a file in the container"
container = "{c}"
command = ["sh", "-c", "touch /tmp/made-by-action; echo touched"]
ha = true

[action.say]
description = "Echo a message"
container = "{c}"
command = ["echo", "{message}"]
confirm = true
[action.say.params.message]
type = "string"
pattern = "[^\\n]{1,100}"

[action.hostfile]
description = "Make a file on the host"
target = "host"
command = ["touch", "{path}"]
ha = true
[action.hostfile.params.path]
type = "string"
pattern = "{dir}/[a-z0-9-]+"
default = "{dir}/from-default"

[action.fail]
target = "host"
command = ["sh", "-c", "echo failing >&2; exit 7"]

[action.slow]
target = "host"
command = ["sleep", "3600"]
timeout = 2

[action.big]
target = "host"
command = ["head", "-c", "200000", "/dev/zero"]

[action.adminonly]
target = "host"
command = ["true"]
role = "admin"
"#;

fn write_actions(dir: &Path, container: &str) -> anyhow::Result<(String, String)> {
    let good = dir.join("good.toml");
    let d = dir.to_string_lossy();
    std::fs::write(
        &good,
        ACTIONS.replace("{c}", container).replace("{dir}", &d),
    )?;
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, "[action.oops]\ncommand = [\"unclosed\"\n")?;
    Ok((
        good.to_string_lossy().into_owned(),
        broken.to_string_lossy().into_owned(),
    ))
}

fn params(v: serde_json::Value) -> RunActionRequest {
    RunActionRequest {
        params: serde_json::from_value(v).unwrap_or_default(),
        timeout_s: None,
    }
}

async fn run(
    c: &Client,
    agent: &str,
    action: &str,
    p: serde_json::Value,
) -> Result<CommandResult, ClientError> {
    c.run_action(agent, action, &params(p), 60).await
}

fn api_code(r: Result<CommandResult, ClientError>) -> anyhow::Result<(ErrorCode, String)> {
    match r {
        Err(ClientError::Api { body, .. }) => Ok((body.code, body.message)),
        other => anyhow::bail!("expected an API error, got {other:?}"),
    }
}

async fn names(c: &Client, agent: &str) -> Vec<String> {
    c.defined_actions(Some(agent))
        .await
        .map(|l| l.actions.into_iter().map(|a| a.action.name).collect())
        .unwrap_or_default()
}

async fn requests_of_action_run(http: &str) -> anyhow::Result<u64> {
    zedops_tests::api::counter_sum(http, "zedops_requests_total{op=\"action.run\"").await
}

/// A secured `zedops serve` whose local agent serves the test's actions (`good.toml`, and
/// `broken.toml`, which is refused), a container for them (removed when `c` drops: keep it
/// bound), and the admin client; ready once the agent advertises them.
struct Stack {
    tmp: TempDir,
    c: TestContainer,
    agent: String,
    serve: Serve,
    admin: Client,
    good: String,
}

async fn stack(prefix: &str, labels: &[&str], extra: &[&str]) -> anyhow::Result<Stack> {
    init_logs();
    let tmp = TempDir::new(prefix)?;
    let c = TestContainer::run(&unique(&format!("zt-{prefix}")), &unique(prefix), labels)?;
    let (good, broken) = write_actions(&tmp.path, &c.name)?;
    let agent = unique(prefix);
    let mut args = vec![
        format!("--local-agent={agent}"),
        format!("--actions={good},{broken}"),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let serve = Serve::start(&args, "warn")?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    eventually(
        "the actions advertised",
        Duration::from_secs(15),
        || async {
            names(&admin, &agent)
                .await
                .contains(&"say".to_owned())
                .then_some(())
        },
    )
    .await?;
    Ok(Stack {
        tmp,
        c,
        agent,
        serve,
        admin,
        good,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_run_from_http_and_the_cli_within_their_schema_roles_and_bounds(
) -> anyhow::Result<()> {
    let label = "zedops.action.lbl.command=sh -c 'echo from label'";
    let Stack {
        tmp,
        c,
        agent,
        serve,
        admin,
        ..
    } = stack("act", &["--label", label], &[]).await?;
    let run_label = c.run_label.clone();
    eventually("the label's action", Duration::from_secs(15), || async {
        names(&admin, &agent)
            .await
            .contains(&"lbl".to_owned())
            .then_some(())
    })
    .await?;
    // The broken file is refused with its name and line; the valid actions are served.
    let logs = serve.logs();
    ensure!(
        logs.contains("broken.toml:") && logs.contains("action refused"),
        "no refusal of broken.toml in the logs:\n{logs}"
    );
    let fleet = admin.defined_actions(None).await?;
    let say = fleet
        .actions
        .iter()
        .find(|a| a.action.name == "say" && a.agent == agent)
        .context("say in the fleet listing")?;
    ensure!(say.online && say.action.confirm && say.action.params[0].name == "message");

    // HTTP: an injection attempt is one literal argument, echoed as it is; the run is an event.
    let mut events = admin.events().await?;
    let evil = "; rm -rf / $(id) `id` && echo pwned";
    let r = run(&admin, &agent, "say", json!({ "message": evil })).await?;
    assert_eq!(r.stdout, format!("{evil}\n"), "{r:?}");
    assert_eq!(r.exit_code, Some(0));
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(e)) = events.next().await {
            if e.action.as_deref() == Some("run say") {
                return Some(e);
            }
        }
        None
    })
    .await?
    .context("no event of the run")?;
    assert_eq!(seen.ok, Some(true));
    drop(events);

    // Out of schema: 400 naming the parameter, and nothing is sent to the agent.
    let before = requests_of_action_run(&serve.http).await?;
    for (p, name) in [
        (json!({ "message": "two\nlines" }), "message"),
        (json!({}), "message"),
        (json!({ "message": "x", "other": 1 }), "other"),
    ] {
        let (code, msg) = api_code(run(&admin, &agent, "say", p.clone()).await)?;
        assert_eq!(code, ErrorCode::BadRequest, "{p}: {msg}");
        assert!(msg.contains(&format!("\"{name}\"")), "{p}: {msg}");
    }
    let path = tmp.path.join("../outside");
    let (code, _) = api_code(
        run(
            &admin,
            &agent,
            "hostfile",
            json!({ "path": path.to_string_lossy() }),
        )
        .await,
    )?;
    assert_eq!(code, ErrorCode::BadRequest);
    assert_eq!(requests_of_action_run(&serve.http).await?, before);
    let (code, msg) = api_code(run(&admin, &agent, "nope", json!({})).await)?;
    assert_eq!(code, ErrorCode::NotFound);
    assert!(msg.contains("say"), "{msg}");

    // The CLI: stdout and the exit code, and changes Docker and the file system show.
    let cli = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        Ok(Command::new(zedops_bin()?)
            .args(["--server", &serve.http, "--token", &serve.admin_token])
            .args(args)
            .stdin(Stdio::null())
            .output()?)
    };
    let out = cli(&["run", "touch"])?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "touched\n");
    Docker::run(&["exec", &c.name, "test", "-f", "/tmp/made-by-action"])?;
    let made = tmp.path.join("from-cli");
    let out = cli(&[
        "run",
        "hostfile",
        "--agent",
        &agent,
        "-p",
        &format!("path={}", made.display()),
    ])?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    ensure!(made.exists(), "the host action made no file");
    let out = cli(&["run", "fail"])?;
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "failing\n");
    let out = cli(&["run", "lbl"])?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from label\n",
        "{out:?}"
    );
    let out = cli(&["actions"])?;
    let table = String::from_utf8_lossy(&out.stdout);
    for want in [
        "AGENT",
        "ACTION",
        "say",
        "lbl",
        "host",
        &format!("exec {}", c.name),
    ] {
        ensure!(table.contains(want), "{want} not in:\n{table}");
    }

    // Roles: a viewer runs nothing, an operator no admin action.
    let http = serve.http.clone();
    let token = |role: Role| {
        let (admin, http) = (&admin, http.clone());
        async move {
            let name = unique(role.as_str());
            let t = admin.create_token(&NewToken { name, role }).await?;
            Client::new(&http, Some(t.token), None).map_err(anyhow::Error::from)
        }
    };
    let viewer = token(Role::Viewer).await?;
    let operator = token(Role::Operator).await?;
    assert_eq!(
        api_code(run(&viewer, &agent, "touch", json!({})).await)?.0,
        ErrorCode::Forbidden
    );
    assert_eq!(
        api_code(run(&operator, &agent, "adminonly", json!({})).await)?.0,
        ErrorCode::Forbidden
    );
    assert_eq!(
        run(&operator, &agent, "touch", json!({})).await?.exit_code,
        Some(0)
    );
    assert_eq!(
        run(&admin, &agent, "adminonly", json!({})).await?.exit_code,
        Some(0)
    );

    // The deadline kills `sleep 3600`; output over the bound is cut and marked.
    let r = run(&admin, &agent, "slow", json!({})).await?;
    ensure!(
        r.timed_out && r.exit_code.is_none() && r.duration_ms < 10_000,
        "{r:?}"
    );
    let r = run(&admin, &agent, "big", json!({})).await?;
    ensure!(
        r.truncated && r.stdout.len() == 64 * 1024,
        "{} bytes",
        r.stdout.len()
    );

    // Labels: an action appears with its container and goes with it, without a restart.
    let other = TestContainer::run(
        &unique("zt-act2"),
        &run_label,
        &["--label", "zedops.action.lbl2.command=echo second"],
    )?;
    eventually("lbl2 after docker run", Duration::from_secs(10), || async {
        names(&admin, &agent)
            .await
            .contains(&"lbl2".to_owned())
            .then_some(())
    })
    .await?;
    assert_eq!(
        run(&admin, &agent, "lbl2", json!({})).await?.stdout,
        "second\n"
    );
    drop(other);
    eventually(
        "lbl2 gone after docker rm",
        Duration::from_secs(10),
        || async { (!names(&admin, &agent).await.contains(&"lbl2".to_owned())).then_some(()) },
    )
    .await?;

    // SIGHUP reads the files again: a new file in the state dir's actions.d is served.
    let dir = serve.home.path.join("data/zedops/local-agent/actions.d");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("late.toml"),
        "[action.late]\ntarget = \"host\"\ncommand = [\"echo\", \"late\"]\n",
    )?;
    serve.proc.signal("HUP")?;
    eventually("late after SIGHUP", Duration::from_secs(10), || async {
        names(&admin, &agent)
            .await
            .contains(&"late".to_owned())
            .then_some(())
    })
    .await?;
    assert_eq!(
        run(&admin, &agent, "late", json!({})).await?.stdout,
        "late\n"
    );

    // The audit log records who ran what with which parameters.
    let audit = admin.audit(Some(200)).await?;
    ensure!(
        audit.iter().any(|a| a.action == "action.run"
            && a.message
                .as_deref()
                .is_some_and(|m| m.starts_with("say ") && m.contains("rm -rf"))),
        "no audit record of say with its parameters"
    );
    Ok(())
}

/// `mosquitto_rr` over MQTT 5 as an MQTT user, to an enrolled agent started with
/// `--accept-unsigned`: the plain-MQTT way in. The signing local agent refuses the same request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_rr_runs_an_action_on_an_agent_that_accepts_unsigned_requests(
) -> anyhow::Result<()> {
    let Stack {
        tmp,
        c: _container,
        agent: local,
        serve,
        admin,
        good,
        ..
    } = stack("rr", &[], &[]).await?;
    let agent = unique("rr");
    let enrollment = admin
        .register_agent(&NewAgent {
            name: agent.clone(),
            ttl_s: None,
        })
        .await?;
    let state = tmp.path.join("state");
    let state_s = state.to_string_lossy().into_owned();
    let proc = spawn_agent_process(
        &agent,
        serve.mqtt,
        &[
            "--enroll",
            &enrollment.token,
            "--server",
            &serve.http,
            "--state-dir",
            &state_s,
            "--accept-unsigned",
            "--actions",
            &good,
        ],
    )?;
    eventually("the agent's actions", Duration::from_secs(20), || async {
        names(&admin, &agent)
            .await
            .contains(&"say".to_owned())
            .then_some(())
    })
    .await?;
    let user = admin
        .create_mqtt_user(&NewMqttUser {
            name: unique("rr"),
            ha_commands: false,
        })
        .await?;
    let rr = |target: &str, args: serde_json::Value| -> anyhow::Result<serde_json::Value> {
        let mut cmd = Command::new("mosquitto_rr");
        cmd.args([
            "-V",
            "mqttv5",
            "-h",
            "127.0.0.1",
            "-p",
            &serve.mqtt.port().to_string(),
        ])
        .args(["-u", &user.username, "-P", &user.password])
        .args(["-t", &topics::request(target, "action.run")])
        .args(["-e", &topics::replies(&unique("rr"))])
        .args(["-m", &args.to_string()])
        .args(["-D", "publish", "correlation-data", "c-77"])
        .args(["-W", "20", "-F", "%j"]);
        let out = zedops_tests::procs::run_ok(&mut cmd, "mosquitto_rr")?;
        let line: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(line["properties"]["correlation-data"], "c-77");
        Ok(serde_json::from_str(
            line["payload"].as_str().context("payload")?,
        )?)
    };
    let say = json!({"action": "say", "params": {"message": "; id"}});
    let reply = rr(&agent, say.clone())?;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["stdout"], "; id\n");
    let made = tmp.path.join("from-mqtt");
    let host = json!({"action": "hostfile", "params": {"path": made.to_string_lossy()}});
    let reply = rr(&agent, host)?;
    assert_eq!(reply["result"]["exit_code"], 0, "{reply}");
    ensure!(made.exists(), "the host action run over MQTT made no file");
    let bad = json!({"action": "say", "params": {"message": "a\nb"}});
    let reply = rr(&agent, bad)?;
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    let refused = rr(&local, say)?;
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["error"]["code"], "unauthorized", "{refused}");

    // An agent that dies (its Last Will) still shows its actions, offline.
    proc.signal("KILL")?;
    eventually(
        "the dead agent's actions, offline",
        Duration::from_secs(15),
        || async {
            let l = admin.defined_actions(Some(&agent)).await.ok()?;
            l.actions
                .iter()
                .any(|a| a.action.name == "say" && !a.online)
                .then_some(())
        },
    )
    .await?;
    Ok(())
}

/// Home Assistant over MQTT 3.1.1 (`mosquitto_sub`/`mosquitto_pub` as an MQTT user with Home
/// Assistant command rights): a `button` for the action marked `ha`, none for the others; a
/// press runs it on the host, and the sensor's retained result renders, through Jinja2, as the
/// exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_assistant_button_runs_its_action_and_the_sensor_shows_the_result(
) -> anyhow::Result<()> {
    // A container hidden from Home Assistant gets no button, whatever its action says.
    let _hidden = TestContainer::run(
        &unique("zt-hidden"),
        &unique("ha"),
        &[
            "--label",
            "zedops.ha=false",
            "--label",
            "zedops.action.hid.command=true",
            "--label",
            "zedops.action.hid.ha=true",
        ],
    )?;
    let extra = ["--ha", "--mqtt311-listen", "127.0.0.1:0"];
    let Stack {
        tmp,
        c,
        agent,
        serve,
        admin,
        ..
    } = stack("ha", &[], &extra).await?;
    let m = Mqtt311::user_of(&serve, &admin, true).await?;
    let node = format!("zedops_{agent}");
    // The hidden container's action is served (so it is the label that keeps its button away).
    eventually("hid served", Duration::from_secs(10), || async {
        names(&admin, &agent)
            .await
            .contains(&"hid".to_owned())
            .then_some(())
    })
    .await?;
    let configs = |platform: &'static str| {
        let (m, node) = (m.clone(), node.clone());
        async move {
            let seen = mosquitto_sub(&m, &format!("homeassistant/{platform}/{node}/+/config"), 2)
                .await
                .ok()?;
            let found: Vec<serde_json::Value> = seen
                .iter()
                .filter(|s| s.topic.contains("/action_"))
                .filter_map(|s| serde_json::from_str(&s.payload).ok())
                .collect();
            // Both buttons (and sensors) are there: a missing one would show as too few below.
            (found.len() >= 2).then_some(found)
        }
    };
    let buttons = eventually("the action's button", Duration::from_secs(20), || {
        configs("button")
    })
    .await?;
    // Anything late (a third, hidden one) would be retained by now.
    let buttons = configs("button").await.unwrap_or(buttons);
    assert_eq!(
        buttons.len(),
        2,
        "only touch and hostfile have ha = true: {buttons:?}"
    );
    let button = buttons
        .iter()
        .find(|b| b["name"] == "Make a file on the host")
        .context("hostfile's button")?;
    assert_eq!(button["name"], "Make a file on the host");
    assert_eq!(button["device"]["identifiers"][0], node.as_str());
    let sensors = eventually("the result sensor", Duration::from_secs(10), || {
        configs("sensor")
    })
    .await?;
    let sensor = sensors
        .iter()
        .find(|s| s["state_topic"] == topics::action_result(&agent, "hostfile").as_str())
        .context("hostfile's sensor")?;
    let command = button["command_topic"].as_str().context("command_topic")?;
    assert_eq!(command, topics::action_run(&agent, "hostfile"));

    // The exec action's button changes the container.
    mosquitto_pub(&m, &topics::action_run(&agent, "touch"), &["-m", "PRESS"]).await?;
    eventually(
        "the file touch made in the container",
        Duration::from_secs(10),
        || async { Docker::run(&["exec", &c.name, "test", "-f", "/tmp/made-by-action"]).ok() },
    )
    .await?;

    mosquitto_pub(&m, command, &["-m", "PRESS"]).await?;
    let made = tmp.path.join("from-default");
    eventually(
        "the file the button made",
        Duration::from_secs(10),
        || async { made.exists().then_some(()) },
    )
    .await?;
    let state_topic = sensor["state_topic"].as_str().context("state_topic")?;
    let result = eventually("the retained result", Duration::from_secs(10), || async {
        let seen = mosquitto_sub(&m, state_topic, 1).await.ok()?;
        seen.into_iter().find(|s| s.retain && !s.payload.is_empty())
    })
    .await?;
    let r: serde_json::Value = serde_json::from_str(&result.payload)?;
    assert_eq!(r["exit_code"], 0, "{r}");
    assert!(r["finished_at"].is_string());
    assert_eq!(
        render_one(&sensor["value_template"], &result.payload).await?,
        "0"
    );
    Ok(())
}

/// The dashboard in Chromium (`tests/browser/actions.mjs`): a viewer sees the actions but cannot
/// run them; an operator runs one with a parameter after its confirm step, one that makes a file
/// on the host (checked here), and one that fails, each output shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_runs_actions_with_their_forms() -> anyhow::Result<()> {
    let Stack {
        tmp,
        c: _container,
        agent,
        serve,
        admin,
        ..
    } = stack("ui", &[], &[]).await?;
    let mut tokens = Vec::new();
    for role in [Role::Operator, Role::Viewer] {
        let name = unique(role.as_str());
        tokens.push(admin.create_token(&NewToken { name, role }).await?.token);
    }
    let made = tmp.path.join("from-browser");
    let made_s = made.to_string_lossy();
    let args = ["--base", &serve.http, "--agent", &agent, "--path", &made_s];
    let env = [
        ("ZEDOPS_TOKEN", tokens[0].as_str()),
        ("ZEDOPS_VIEWER_TOKEN", tokens[1].as_str()),
    ];
    zedops_tests::browser::run("actions.mjs", &args, &env).await?;
    ensure!(
        made.exists(),
        "the host action run from the dashboard made no file"
    );
    Ok(())
}
