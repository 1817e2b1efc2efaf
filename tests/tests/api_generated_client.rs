//! Issue 3, items 6 and 7: the checked-in OpenAPI document (`openapi/zedops.json`) is valid
//! OpenAPI 3 with summaries and documented `{code, message}` errors (`tests/python/check_spec.py`,
//! openapi-spec-validator), and a client generated from it by a generator we did not write
//! (openapi-python-client) lists agents and restarts a container on a real agent with real Docker
//! (`tests/python/generated_client.py`). Both scripts run with the `python3` first on PATH; run
//! `bash scripts/provision.sh` first to install their pip packages.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use zedops_tests::api::{Broker, BrokerKind, TestApi};
use zedops_tests::procs::InProcAgent;
use zedops_tests::{eventually, init_logs, unique, Docker, TestContainer};

/// Longest a python script may run before it is killed.
const PYTHON_LIMIT: Duration = Duration::from_secs(120);

/// The workspace root (the python scripts and the spec are addressed from there).
fn workspace_root() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    root.canonicalize().unwrap_or(root)
}

/// Outcome of one python script: whether it exited 0, and everything it printed.
struct PyRun {
    ok: bool,
    report: String,
}

/// Runs `python3 ARGS` in the workspace root with extra environment, killed after `PYTHON_LIMIT`.
async fn python(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<PyRun> {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(args)
        .current_dir(workspace_root())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("starting python3 {args:?} (is python3 on PATH?)"))?;
    let (ok, status, stdout, stderr) =
        match tokio::time::timeout(PYTHON_LIMIT, child.wait_with_output()).await {
            // Dropping the wait on timeout kills the child (kill_on_drop).
            Err(_) => (
                false,
                format!("killed after {PYTHON_LIMIT:?}"),
                String::new(),
                String::new(),
            ),
            Ok(out) => {
                let out = out.with_context(|| format!("waiting for python3 {args:?}"))?;
                (
                    out.status.success(),
                    out.status.to_string(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }
        };
    let report = format!(
        "$ python3 {}\n{status} after {:.1} s\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        start.elapsed().as_secs_f64(),
        stdout.trim_end(),
        stderr.trim_end()
    );
    Ok(PyRun { ok, report })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_client_lists_agents_and_restarts_a_container() -> anyhow::Result<()> {
    init_logs();
    let run = unique("genclient");
    let web = TestContainer::run(&unique("zt-genclient"), &run, &[])?;
    let broker = Broker::start(BrokerKind::Embedded).await?;
    let agent = InProcAgent::start(&unique("gen-agent"), broker.addr, |_| {})?;
    let a = agent.name.clone();
    // With tokens, so the generated client's bearer authentication is exercised too.
    let (api, tokens) = TestApi::start_with_tokens(&broker.url()).await?;
    eventually(
        &format!("agent {a} online in the API"),
        Duration::from_secs(10),
        || async {
            let (s, v) = api
                .call("GET", &format!("/api/v1/agents/{a}"), Some(&tokens.viewer))
                .await
                .ok()?;
            (s == 200 && v["online"] == true).then_some(())
        },
    )
    .await?;

    // Item 7: the spec itself. Checked first but asserted after the client ran, so that one
    // run reports both.
    let spec = python(&["tests/python/check_spec.py", "openapi/zedops.json"], &[]).await?;

    // Item 6: the generated client, with an operator token (restart needs operator).
    let before = Docker::started_at(&web.name)?;
    let client = python(
        &[
            "tests/python/generated_client.py",
            "--spec",
            "openapi/zedops.json",
            "--base",
            &api.base,
            "--agent",
            &a,
            "--container",
            &web.name,
        ],
        &[("ZEDOPS_TOKEN", tokens.operator.as_str())],
    )
    .await?;

    assert!(
        spec.ok && client.ok,
        "check_spec.py {} and generated_client.py {}:\n\n{}\n\n{}",
        if spec.ok { "passed" } else { "FAILED" },
        if client.ok { "passed" } else { "FAILED" },
        spec.report,
        client.report
    );
    println!("{}\n\n{}", spec.report, client.report);

    // Docker, observed independently, really restarted the container.
    let after = Docker::started_at(&web.name)?;
    assert_ne!(
        after, before,
        "StartedAt of {} did not change: the restart did not happen",
        web.name
    );
    eventually(
        &format!("{} running after the restart", web.name),
        Duration::from_secs(5),
        || async { (Docker::state(&web.name).ok()? == "running").then_some(()) },
    )
    .await?;

    api.stop().await;
    agent.stop().await;
    Ok(())
}

/// Issue 15, item 2: the spec documents the constraints the API enforces, so data the spec allows
/// is accepted. Schemathesis (a property-based API tester we did not write) generates requests
/// from `openapi/zedops.json` for every operation but the endless event stream, and checks that
/// schema-valid ones are not refused with `400`, that nothing answers `5xx`, and that every answer
/// matches its schema. It runs against `zedops serve` on the secured default (tokens, an
/// authenticated broker), as an admin, but with no agent: schemathesis follows what the API lists,
/// and with a local agent it took that agent offline (`DELETE /api/v1/agents/{agent}` is among the
/// operations) and aimed actions at the containers of other tests running on this engine. Every input is validated before the API looks for the agent, so the
/// checks reach every parameter all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_spec_and_the_api_in_agreement() -> anyhow::Result<()> {
    init_logs();
    let serve = zedops_tests::procs::Serve::start(&[], "warn")?;
    // `/readyz` is among the operations: it answers 503 until the API has warmed up, by design.
    serve.ready().await?;
    let auth = format!("Authorization: Bearer {}", serve.admin_token);
    let run = python(
        &[
            "-m",
            "schemathesis.cli",
            "run",
            "openapi/zedops.json",
            "--url",
            &serve.http,
            "-H",
            &auth,
            "--mode",
            "positive",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "30",
            "--generation-deterministic",
            "--checks",
            "positive_data_acceptance,not_a_server_error,response_schema_conformance,status_code_conformance",
            "--exclude-operation-id",
            "events",
            "--request-timeout",
            "20",
        ],
        &[("NO_COLOR", "1"), ("SCHEMATHESIS_HOOKS", "")],
    )
    .await?;
    assert!(
        run.ok,
        "schemathesis found disagreements:\n\n{}",
        run.report
    );
    println!("{}", run.report);
    Ok(())
}
