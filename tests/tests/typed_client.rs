//! The Rust client (`zedops-client`) against a real `zedops serve` on the secured default (its
//! local agent enrolled, tokens, an authenticated broker) and real Docker: every operation it
//! offers decodes the server's answer into the spec's types, and errors arrive as typed codes.

use std::time::Duration;

use zedops_client::{
    Action, ActionOptions, Client, ClientError, ContainerState, ErrorCode, EventKind, ListOptions,
    LogsOptions, NewAgent, NewMqttUser, NewToken, Role,
};
use zedops_tests::procs::Serve;
use zedops_tests::{eventually, init_logs, unique, TestContainer};

/// The error of a call that should have been refused.
fn refusal(what: &str, got: impl std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("expected an error ({what}), got {got:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_of_the_typed_client_against_the_secured_default() -> anyhow::Result<()> {
    init_logs();
    let run = unique("typed");
    let web = TestContainer::run(&unique("zt-typed"), &run, &[])?;
    let agent = unique("typed");
    let serve = Serve::start(&[&format!("--local-agent={agent}")], "warn")?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;

    // Reads of the fleet, from the cache and live.
    let found = eventually(
        "the agent online with the container",
        Duration::from_secs(15),
        || async {
            let agents = admin.locate(&web.name).await.ok()?;
            let online = admin.agent(&agent).await.ok()?.online;
            (online && agents == [agent.clone()]).then_some(agents)
        },
    )
    .await?;
    assert_eq!(found, std::slice::from_ref(&agent));
    let info = admin.agent(&agent).await?;
    assert!(info.online, "{info:?}");
    assert!(admin.agents().await?.iter().any(|a| a.name == agent));
    let ping = admin.ping(&agent, None).await?;
    assert_eq!(ping.pong.agent, agent);
    assert!(ping.round_trip_ms > 0.0);
    let live = ListOptions {
        live: true,
        ..Default::default()
    };
    let listing = admin.containers(&agent, &live).await?;
    assert!(listing.live && listing.containers.iter().any(|c| c.name == web.name));
    let cached = admin.containers(&agent, &ListOptions::default()).await?;
    assert!(!cached.live && cached.taken_at.is_some());
    let detail = admin.inspect(&agent, &web.name, None).await?;
    assert_eq!(detail.container.name, web.name);
    let id_prefix = &detail.container.id[..12];
    assert_eq!(admin.locate(id_prefix).await?, std::slice::from_ref(&agent));

    // An action, its live event, and its audit record.
    let mut events = admin.events().await?;
    let restarted = admin
        .act(
            &agent,
            &web.name,
            Action::Restart,
            &ActionOptions::default(),
        )
        .await?;
    assert!(restarted.changed);
    assert_eq!(restarted.container.state, ContainerState::Running);
    let ev = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = events.next().await {
            let ev = ev?;
            if ev.kind == EventKind::Action && ev.container.as_deref() == Some(&web.name) {
                return Ok(ev);
            }
        }
        anyhow::bail!("the event stream ended")
    })
    .await??;
    assert_eq!((ev.ok, ev.action.as_deref()), (Some(true), Some("restart")));
    let started = admin
        .act(&agent, &web.name, Action::Start, &ActionOptions::default())
        .await?;
    assert!(
        !started.changed,
        "starting a running container changes nothing"
    );
    let audit = admin.audit(Some(10)).await?;
    assert!(audit
        .iter()
        .any(|r| r.action == "container.restart" && r.container.as_deref() == Some(&web.name)));
    let logs = LogsOptions {
        tail: Some(5),
        ..Default::default()
    };
    assert_eq!(
        admin.logs(&agent, &web.name, &logs).await?.container,
        web.name
    );
    let actions = admin.container_actions().await?;
    assert_eq!(actions.len(), zedops_proto::ACTIONS.len());

    // Administration: tokens, agents, MQTT users; and the roles they carry.
    let who = admin.whoami().await?;
    assert_eq!((who.role, who.auth_required), (Role::Admin, true));
    let viewer_name = unique("viewer");
    let created = admin
        .create_token(&NewToken {
            name: viewer_name.clone(),
            role: Role::Viewer,
        })
        .await?;
    assert!(admin.tokens().await?.iter().any(|t| t.name == viewer_name));
    let viewer = Client::new(&serve.http, Some(created.token), None)?;
    assert_eq!(viewer.whoami().await?.role, Role::Viewer);
    let refused = viewer
        .act(&agent, &web.name, Action::Stop, &ActionOptions::default())
        .await
        .map_or_else(Ok, |v| Err(refusal("a viewer cannot stop a container", v)))?;
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");
    admin.revoke_token(&viewer_name).await?;
    let revoked = viewer
        .whoami()
        .await
        .map_or_else(Ok, |v| Err(refusal("a revoked token", v)))?;
    assert_eq!(revoked.code(), Some(ErrorCode::Unauthorized), "{revoked}");

    let other = unique("other");
    let enrollment = admin
        .register_agent(&NewAgent {
            name: other.clone(),
            ttl_s: Some(60),
        })
        .await?;
    assert!(enrollment.token.starts_with("zde_"));
    assert_eq!(admin.remove_agent(&other).await?.name, other);
    let user = admin
        .create_mqtt_user(&NewMqttUser {
            name: unique("ha"),
            ha_commands: false,
        })
        .await?;
    assert!(!user.password.is_empty());

    // Errors: typed codes with the server's sentence; an unreachable server is its own kind.
    let missing = admin.inspect(&agent, "no-such-container", None).await;
    let missing = missing.map_or_else(Ok, |v| Err(refusal("no such container", v)))?;
    assert_eq!(missing.code(), Some(ErrorCode::NotFound), "{missing}");
    assert!(
        missing.to_string().contains("no-such-container"),
        "{missing}"
    );
    let unknown = admin
        .ping("no-such-agent", None)
        .await
        .map_or_else(Ok, |v| Err(refusal("unknown", v)))?;
    assert_eq!(unknown.code(), Some(ErrorCode::NotFound));
    let port = zedops_tests::free_port();
    let nowhere = Client::new(&format!("http://127.0.0.1:{port}"), None, None)?;
    let e = nowhere
        .agents()
        .await
        .map_or_else(Ok, |v| Err(refusal("nothing listens there", v)))?;
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
    drop(serve);
    Ok(())
}
