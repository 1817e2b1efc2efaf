//! The `zedops` CLI as a user runs it: the real binary against a real server and real Docker.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::Context;
use zedops_tests::api::{Broker, BrokerKind, SseReader, TestApi};
use zedops_tests::procs::{zedops_bin, InProcAgent, Serve, TempDir};
use zedops_tests::{eventually, init_logs, unique, Docker, TestContainer};

/// Runs `zedops ARGS` with a private config dir (so no saved login interferes).
fn zedops(server: &str, args: &[&str], home: &TempDir) -> anyhow::Result<Output> {
    Ok(Command::new(zedops_bin()?)
        .arg("--server")
        .arg(server)
        .args(args)
        .env("XDG_CONFIG_HOME", home.path.join("config"))
        .env("XDG_DATA_HOME", home.path.join("data"))
        .env_remove("ZEDOPS_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()?)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

async fn online(api: &TestApi, agent: &str) -> anyhow::Result<()> {
    eventually("agent online", Duration::from_secs(10), || async {
        let (s, v) = api
            .get_json(&format!("/api/v1/agents/{agent}"))
            .await
            .ok()?;
        (s == 200 && v["online"] == true).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_ps_and_exit_codes() -> anyhow::Result<()> {
    init_logs();
    let home = TempDir::new("cli-home")?;
    let run = unique("cli");
    let web = TestContainer::run(&unique("zt-cli-web"), &run, &[])?;
    let broker = Broker::start(BrokerKind::Embedded).await?;
    let maestro = InProcAgent::start(&unique("maestro"), broker.addr, |_| {})?;
    let api = TestApi::start(&broker.url()).await?;
    online(&api, &maestro.name).await?;
    let s = api.base.clone();
    let m = maestro.name.clone();

    // 1. zedops restart web --agent maestro
    let before = web.started_at()?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = zedops(&s, &["restart", &web.name, "--agent", &m, "-t", "5"], &home)?;
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(0), "stdout {o} stderr {e}");
    assert_eq!(o.trim(), web.name);
    assert_ne!(web.started_at()?, before, "Docker shows a new StartedAt");

    // ps -o json lists it with its state; the table shows the same containers.
    let v = eventually("ps shows it running", Duration::from_secs(5), || async {
        let out = zedops(&s, &["ps", "--agent", &m, "-o", "json"], &home).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let row = v
            .as_array()?
            .iter()
            .find(|c| c["name"] == web.name.as_str())?
            .clone();
        (row["state"] == "running").then_some(v)
    })
    .await?;
    let json_names: Vec<String> = v
        .as_array()
        .context("array")?
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let out = zedops(&s, &["ps", "--agent", &m], &home)?;
    let (table, _) = text(&out);
    let mut lines = table.lines();
    let header = lines.next().context("header")?;
    assert!(
        header.starts_with("NAME") && header.contains("STATE") && header.contains("IMAGE"),
        "{header}"
    );
    let table_names: Vec<String> = lines
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(json_names, table_names);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&web.name) && l.contains("running")),
        "{table}"
    );
    // Fleet-wide ps has an AGENT column.
    let out = zedops(&s, &["ps"], &home)?;
    assert!(text(&out)
        .0
        .lines()
        .next()
        .unwrap_or_default()
        .starts_with("AGENT"));

    // ping: the agent answers through the API; an unknown agent is exit 3.
    let out = zedops(&s, &["ping", &m], &home)?;
    let (o_, e_) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{e_}");
    assert!(
        o_.contains(&m) && o_.contains("answered in") && o_.contains("Docker"),
        "{o_}"
    );
    let out = zedops(&s, &["ping", "zt-no-such-agent"], &home)?;
    assert_eq!(out.status.code(), Some(3), "{:?}", text(&out));

    // 2. Without --agent: a unique name works.
    let out = zedops(&s, &["stop", &web.name, "-t", "5"], &home)?;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert_eq!(Docker::state(&web.name)?, "exited");
    let out = zedops(&s, &["start", &web.name], &home)?;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));

    // 3. Unknown container → 3 with a sentence naming container and agent.
    let out = zedops(&s, &["restart", "zt-web-9", "--agent", &m], &home)?;
    let (_, e) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{e}");
    assert!(e.contains("zt-web-9") && e.contains(&m), "{e}");
    // Bad flags → 2.
    let out = zedops(&s, &["ps", "--no-such-flag"], &home)?;
    assert_eq!(out.status.code(), Some(2));
    let out = zedops(&s, &["restart"], &home)?;
    assert_eq!(out.status.code(), Some(2));
    // Server unreachable → 1 with the URL it tried.
    let dead = format!("http://127.0.0.1:{}", zedops_tests::free_port());
    let out = zedops(&dead, &["ps"], &home)?;
    let (_, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains(&dead), "{e}");

    // A second agent on the same Docker host sees the same containers: now the name is ambiguous.
    let other = InProcAgent::start(&unique("other"), broker.addr, |_| {})?;
    online(&api, &other.name).await?;
    eventually("web on both agents", Duration::from_secs(5), || async {
        let (_, v) = api
            .get_json(&format!("/api/v1/containers?name={}&exact=true", web.name))
            .await
            .ok()?;
        (v.as_array()?.len() == 2).then_some(())
    })
    .await?;
    let out = zedops(&s, &["restart", &web.name], &home)?;
    let (_, e) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains(&m) && e.contains(&other.name),
        "names both agents: {e}"
    );

    // Offline agent → 4.
    other.stop().await;
    let out = zedops(&s, &["restart", &web.name, "--agent", &m], &home)?;
    assert_eq!(out.status.code(), Some(0));
    maestro.stop().await;
    eventually("maestro offline", Duration::from_secs(5), || async {
        let (_, v) = api.get_json(&format!("/api/v1/agents/{m}")).await.ok()?;
        (v["online"] == false).then_some(())
    })
    .await?;
    let out = zedops(&s, &["restart", &web.name, "--agent", &m], &home)?;
    let (_, e) = text(&out);
    assert_eq!(out.status.code(), Some(4), "{e}");
    assert!(e.contains("offline"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_local_agent_then_ps_with_nothing_else() -> anyhow::Result<()> {
    init_logs();
    let run = unique("serve");
    let web = TestContainer::run(&unique("zt-serve"), &run, &[])?;
    let name = unique("host");
    let serve = Serve::start(&[&format!("--local-agent={name}")], "warn")?;
    let url = serve.http.clone();
    let home = &serve.home;
    // The banner says where the API, the docs and the admin token are.
    for part in [
        "HTTP API",
        "/docs",
        "Dashboard",
        "Admin token",
        "Next: ",
        "zedops ps",
    ] {
        assert!(serve.banner.contains(part), "{part} in {}", serve.banner);
    }
    let token_file = home.path.join("data/zedops/admin.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_file)?.permissions().mode() & 0o777,
            0o600
        );
    }

    // `zedops ps` on this host: no login, no token flag — it reads the admin token itself.
    let out = eventually(
        "ps to list this host's container",
        Duration::from_secs(10),
        || async {
            let out = zedops(&url, &["ps", "-a"], home).ok()?;
            text(&out).0.contains(&web.name).then_some(out)
        },
    )
    .await?;
    assert_eq!(out.status.code(), Some(0));
    let (o, _) = text(&out);
    assert!(
        o.lines()
            .any(|l| l.contains(&name) && l.contains(&web.name)),
        "{o}"
    );

    // And without the token file, the server refuses (exit 6).
    let other_home = TempDir::new("nohome")?;
    let out = zedops(&url, &["ps"], &other_home)?;
    assert_eq!(out.status.code(), Some(6), "{:?}", text(&out));

    // SIGTERM: a clean, prompt exit, even with a dashboard's event stream open (it is ended
    // rather than waited for).
    let token = std::fs::read_to_string(&token_file)?;
    let http = reqwest::Client::builder()
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()).parse()?,
        )]))
        .build()?;
    let _sse = SseReader::open(&http, &format!("{url}/api/v1/events")).await?;
    let mut serve = serve;
    let t = std::time::Instant::now();
    serve.proc.signal("TERM")?;
    let st = serve.proc.wait_exit(Duration::from_secs(10)).await?;
    assert!(st.success(), "{st}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "stopping took {:?}: an open event stream held the server",
        t.elapsed()
    );
    // A clean stop does not warn about itself (the API used to report its own disconnect as a
    // lost broker). rumqttd's `router-drop` line is its own (docs/operations.md, Logs).
    let logs = serve.stderr.lock().map(|l| l.clone()).unwrap_or_default();
    let ours: Vec<&str> = logs
        .lines()
        .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && !l.contains("rumqttd"))
        .collect();
    assert!(
        ours.is_empty(),
        "warnings or errors on a clean stop: {ours:#?}"
    );
    Ok(())
}
