//! The web dashboard (issue 7) in a real headless Chromium, driven by Playwright
//! (`tests/browser/dashboard.mjs`), against the API with tokens, an agent and real Docker.
//!
//! The node script clicks; this test is the Docker side (`--sync`): at each step the script prints
//! `@@{"step":…}` and waits, this test checks Docker (or changes it, for the external stop) and
//! answers `ok` or the failure. Needs `bash scripts/provision-browser.sh` (Chromium and
//! playwright-core) and `cargo build --bin zedops`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use zedops_tests::api::{Broker, BrokerKind, TestApi, Tokens};
use zedops_tests::procs::InProcAgent;
use zedops_tests::{eventually, init_logs, unique, Docker, TestContainer};

/// The whole script, all phases, must finish within this.
const SCRIPT_LIMIT: Duration = Duration::from_secs(180);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Fails with what to run when the browser or playwright-core is missing.
fn browser_ready() -> anyhow::Result<()> {
    let modules = root().join("tests/browser/node_modules/playwright-core/package.json");
    if !Path::new("/usr/bin/chromium").exists() || !modules.exists() {
        bail!(
            "the browser test needs /usr/bin/chromium and {}: run `bash scripts/provision-browser.sh`",
            modules.display()
        );
    }
    Ok(())
}

/// A TCP proxy in front of the API whose connections the test can cut, as if the network failed:
/// while down it drops every open connection and closes new ones at once.
struct CutProxy {
    base: String,
    down: Arc<AtomicBool>,
    cut: broadcast::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    async fn start(upstream: &str) -> anyhow::Result<Self> {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .context("API address")?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let down = Arc::new(AtomicBool::new(false));
        let (cut, _) = broadcast::channel::<()>(4);
        let (d, c) = (down.clone(), cut.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let mut cut_rx = c.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_rx, mut client_tx) = client.split();
                    let (mut server_rx, mut server_tx) = server.split();
                    // Either side closing closes both (a browser gone ends its event stream).
                    tokio::select! {
                        _ = tokio::io::copy(&mut client_rx, &mut server_tx) => {}
                        _ = tokio::io::copy(&mut server_rx, &mut client_tx) => {}
                        _ = cut_rx.recv() => {}
                    }
                });
            }
        });
        Ok(Self {
            base,
            down,
            cut,
            task,
        })
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            let _ = self.cut.send(());
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Tokens handed to the script; `None` for a server without authentication.
struct Auth<'a> {
    tokens: &'a Tokens,
    bad: String,
}

/// The API's cached list shows `container` in `state` (read with `token` when the server has auth).
async fn cache_shows(
    api: &TestApi,
    token: Option<&str>,
    agent: &str,
    container: &str,
    state: &str,
) -> anyhow::Result<()> {
    eventually(
        &format!("{container} {state} in the API's cache"),
        Duration::from_secs(10),
        || async {
            let (s, v) = api
                .call("GET", &format!("/api/v1/agents/{agent}/containers"), token)
                .await
                .ok()?;
            let found = s == 200
                && v["containers"]
                    .as_array()?
                    .iter()
                    .any(|c| c["name"] == container && c["state"] == state);
            found.then_some(())
        },
    )
    .await
}

/// Docker's state of `name` becomes `want` within 5 s.
async fn docker_state(name: &str, want: &str) -> anyhow::Result<()> {
    eventually(
        &format!("Docker: {name} {want}"),
        Duration::from_secs(5),
        || async { (Docker::state(name).ok()? == want).then_some(()) },
    )
    .await
}

/// What the steps of one script run need.
struct Ctx<'a> {
    api: &'a TestApi,
    proxy: &'a CutProxy,
    agent: &'a str,
    container: &'a str,
    auth: Option<&'a Auth<'a>>,
}

/// Runs the node script with `--sync` through a [`CutProxy`], answering its steps; returns its
/// `RESULT` JSON.
async fn run_script(cx: &Ctx<'_>, extra: &[&str]) -> anyhow::Result<Value> {
    let script = root().join("tests/browser/dashboard.mjs");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&script)
        .args([
            "--base",
            &cx.proxy.base,
            "--agent",
            cx.agent,
            "--container",
            cx.container,
            "--sync",
        ])
        .args(extra)
        .env_remove("ZEDOPS_TOKEN")
        .env_remove("ZEDOPS_VIEWER_TOKEN")
        .env_remove("ZEDOPS_BAD_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(a) = cx.auth {
        cmd.env("ZEDOPS_TOKEN", &a.tokens.operator)
            .env("ZEDOPS_VIEWER_TOKEN", &a.tokens.viewer)
            .env("ZEDOPS_BAD_TOKEN", &a.bad);
    }
    let mut child = cmd
        .spawn()
        .context("starting node (Node.js 20 is expected)")?;
    let mut stdin = child.stdin.take().context("node stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("node stdout")?).lines();

    let mut result = None;
    let mut started_at = String::new();
    let drive = async {
        while let Some(line) = lines.next_line().await? {
            println!("{line}");
            if let Some(json) = line.strip_prefix("RESULT ") {
                result = Some(serde_json::from_str::<Value>(json)?);
                continue;
            }
            let Some(json) = line.strip_prefix("@@") else {
                continue;
            };
            let step: Value = serde_json::from_str(json)?;
            let name = step["step"].as_str().unwrap_or_default().to_owned();
            let t = Instant::now();
            let answer = match answer_step(cx, &name, &mut started_at).await {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("{name}: {e:#}"),
            };
            println!(
                "[rust] step {name} ({} ms): {answer}",
                t.elapsed().as_millis()
            );
            stdin.write_all(format!("{answer}\n").as_bytes()).await?;
            stdin.flush().await?;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(SCRIPT_LIMIT, drive)
        .await
        .with_context(|| format!("the browser script ran over {SCRIPT_LIMIT:?}"))??;
    let status = child.wait().await?;
    let result = result.context("the browser script printed no RESULT line")?;
    ensure!(
        status.success() && result["ok"] == true,
        "the browser script failed ({status}): {}",
        result["error"].as_str().unwrap_or("see its output above")
    );
    Ok(result)
}

/// Whether the script's result lists `phase` as done.
fn ran(result: &Value, phase: &str) -> bool {
    result["phases"]
        .as_array()
        .is_some_and(|p| p.iter().any(|x| x == phase))
}

/// The Docker (and network) side of one step of the script.
async fn answer_step(cx: &Ctx<'_>, step: &str, started_at: &mut String) -> anyhow::Result<()> {
    let c = cx.container;
    match step {
        "stop" => docker_state(c, "exited").await,
        "start" => {
            docker_state(c, "running").await?;
            *started_at = Docker::started_at(c)?;
            // StartedAt must be able to differ for the restart that follows.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            Ok(())
        }
        "restart" => {
            docker_state(c, "running").await?;
            let now = Docker::started_at(c)?;
            ensure!(
                now != *started_at,
                "restart kept StartedAt {now}: the container was not restarted"
            );
            Ok(())
        }
        "external-stop" => {
            // Outside zedops: the docker CLI.
            Docker::run(&["stop", "-t", "5", c])?;
            ensure!(Docker::state(c)? == "exited", "docker stop");
            Ok(())
        }
        "cut" => {
            cx.proxy.set_down(true);
            Ok(())
        }
        "start-while-cut" => {
            Docker::run(&["start", c])?;
            // The page cannot hear this event; it must re-fetch once it reconnects.
            let admin = cx.auth.map(|a| a.tokens.admin.as_str());
            cache_shows(cx.api, admin, cx.agent, c, "running").await
        }
        "restore" => {
            cx.proxy.set_down(false);
            Ok(())
        }
        other => bail!("unknown step {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_browser() -> anyhow::Result<()> {
    init_logs();
    browser_ready()?;
    let begin = Instant::now();
    let run = unique("dashboard");
    let web = TestContainer::run(&unique("zt-dash"), &run, &[])?;
    let broker = Broker::start(BrokerKind::Embedded).await?;
    let agent = InProcAgent::start(&unique("dash"), broker.addr, |_| {})?;
    let a = agent.name.clone();

    // With tokens: a wrong token, a viewer, then the operator's whole flow.
    let (api, tokens) = TestApi::start_with_tokens(&broker.url()).await?;
    cache_shows(&api, Some(&tokens.admin), &a, &web.name, "running").await?;
    let proxy = CutProxy::start(&api.base).await?;
    let auth = Auth {
        tokens: &tokens,
        bad: "zdt_intruder_0123456789abcdef0123456789abcdef".into(),
    };
    let cx = Ctx {
        api: &api,
        proxy: &proxy,
        agent: &a,
        container: &web.name,
        auth: Some(&auth),
    };
    let shot = root().join("artifacts/dashboard-agent.png");
    let shot_arg = shot.to_string_lossy().into_owned();
    let r = run_script(&cx, &["--screenshot", &shot_arg]).await?;
    for phase in ["parser", "bad", "viewer", "operator"] {
        ensure!(ran(&r, phase), "phase {phase} did not run: {r}");
    }
    let external = r["external_stop_ms"].as_u64().context("external_stop_ms")?;
    ensure!(
        external < 2000,
        "an external docker stop showed {external} ms after it started"
    );
    ensure!(shot.exists(), "no screenshot at {}", shot.display());
    // The script's last step started the container while the page was cut off.
    ensure!(Docker::state(&web.name)? == "running");
    println!(
        "[rust] with tokens: actions {} ms, external stop shown in {external} ms, recovery {} ms, script {} ms",
        r["actions"], r["recovery_ms"], r["total_ms"]
    );
    // Dropped, not stopped: a graceful stop would wait out the browser's event stream (5 s).
    drop(proxy);
    drop(api);

    // Without authentication: no sign-in form, the container with its buttons.
    let open = TestApi::start(&broker.url()).await?;
    cache_shows(&open, None, &a, &web.name, "running").await?;
    let proxy = CutProxy::start(&open.base).await?;
    let cx = Ctx {
        api: &open,
        proxy: &proxy,
        agent: &a,
        container: &web.name,
        auth: None,
    };
    let r = run_script(&cx, &["--smoke"]).await?;
    ensure!(ran(&r, "smoke"), "the smoke phase did not run: {r}");
    drop(proxy);
    drop(open);

    agent.stop().await;
    println!("[rust] dashboard test took {:?}", begin.elapsed());
    Ok(())
}
