//! Issue 16, item 2: `container.exec` on the secured default (`zedops serve` with its enrolled
//! local agent, tokens, an authenticated broker) and real Docker, from the CLI and the typed
//! client: output and exit code come back, an injection attempt is one literal argument, output
//! over the bound is truncated and marked, the deadline kills the command, a viewer is refused,
//! and a request outside the bounds is `400` before it reaches the agent.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zedops_client::{Client, ErrorCode, ExecRequest, NewToken, Role};
use zedops_tests::procs::{zedops_bin, Serve};
use zedops_tests::{eventually, init_logs, unique, Docker, TestContainer};

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_one_command_bounded_and_killed_at_its_deadline() -> anyhow::Result<()> {
    init_logs();
    let run = unique("exec");
    let web = TestContainer::run(&unique("zt-exec"), &run, &[])?;
    let agent = unique("exec");
    let serve = Serve::start(&[&format!("--local-agent={agent}")], "warn")?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    eventually(
        "the container in the fleet",
        Duration::from_secs(15),
        || async {
            let online = admin.agent(&agent).await.ok()?.online;
            let here = admin.locate(&web.name).await.ok()? == [agent.clone()];
            (online && here).then_some(())
        },
    )
    .await?;

    // The CLI: stdout and stderr apart, the command's exit code, and a change Docker sees.
    let out = Command::new(zedops_bin()?)
        .args([
            "--server",
            &serve.http,
            "--token",
            &serve.admin_token,
            "exec",
            &web.name,
        ])
        .args([
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; touch /tmp/made-by-exec; exit 3",
        ])
        .stdin(Stdio::null())
        .output()?;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    Docker::run(&["exec", &web.name, "test", "-f", "/tmp/made-by-exec"])?;

    // An injection attempt is one literal argument: no shell runs it.
    let hostile = "; touch /tmp/injected; $(touch /tmp/injected2)";
    let req = ExecRequest {
        cmd: cmd(&["echo", hostile]),
        ..Default::default()
    };
    let r = admin.exec(&agent, &web.name, &req).await?;
    assert_eq!(
        (r.exit_code, r.stdout.as_str()),
        (Some(0), &*format!("{hostile}\n"))
    );
    for f in ["/tmp/injected", "/tmp/injected2"] {
        assert!(
            Docker::run(&["exec", &web.name, "test", "-e", f]).is_err(),
            "{f} exists"
        );
    }

    // Environment, working directory; output over 64 KiB is cut and marked.
    let req = ExecRequest {
        cmd: cmd(&["sh", "-c", "echo $GREETING; pwd; yes | head -c 200000 >&2"]),
        workdir: Some("/tmp".into()),
        env: vec!["GREETING=hello there".into()],
        ..Default::default()
    };
    let r = admin.exec(&agent, &web.name, &req).await?;
    assert_eq!(r.stdout, "hello there\n/tmp\n");
    assert!(
        r.truncated && r.stderr.len() == 64 * 1024,
        "{}",
        r.stderr.len()
    );

    // The deadline kills the command, and says so.
    let t0 = Instant::now();
    let req = ExecRequest {
        cmd: cmd(&["sleep", "3600"]),
        timeout_s: Some(2),
        ..Default::default()
    };
    let r = admin.exec(&agent, &web.name, &req).await?;
    assert!(r.timed_out && r.exit_code.is_none(), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    eventually("the sleep killed", Duration::from_secs(5), || async {
        let ps = Docker::run(&["exec", &web.name, "ps"]).ok()?;
        (!ps.contains("sleep 3600")).then_some(())
    })
    .await?;

    // Bounds are checked at the API (400), roles too (a viewer may not exec).
    let bad = ExecRequest {
        cmd: cmd(&["x"]),
        env: vec!["1BAD=x".into()],
        ..Default::default()
    };
    let e = admin.exec(&agent, &web.name, &bad).await.err();
    assert_eq!(e.and_then(|e| e.code()), Some(ErrorCode::BadRequest));
    let viewer = admin
        .create_token(&NewToken {
            name: unique("viewer"),
            role: Role::Viewer,
        })
        .await?;
    let viewer = Client::new(&serve.http, Some(viewer.token), None)?;
    let e = viewer.exec(&agent, &web.name, &req).await.err();
    assert_eq!(e.and_then(|e| e.code()), Some(ErrorCode::Forbidden));
    // The audit log has who ran what.
    let audit = admin.audit(Some(20)).await?;
    assert!(
        audit.iter().any(|a| a.action == "container.exec"
            && a.message.as_deref().is_some_and(|m| m.contains("sleep"))),
        "{audit:?}"
    );
    Ok(())
}
