//! The HTTP API against unauthenticated, hostile clients (issue 14, item 9), on a real
//! `zedops serve` with its default security: bounded bodies, validation before the database,
//! no log injection, no name oracle, failed enrollments that cannot evict the audit log, and a
//! rate limit on the unauthenticated route.

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use zedops_tests::procs::Serve;
use zedops_tests::{init_logs, unique};

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: i32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM")
}

async fn enroll(http: &reqwest::Client, base: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let r = http
        .post(format!("{base}/api/v1/enroll"))
        .json(&body)
        .send()
        .await?;
    let s = r.status().as_u16();
    Ok((s, r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_enrollment_cannot_exhaust_or_confuse_the_server() -> anyhow::Result<()> {
    init_logs();
    let serve = Serve::start(&[], "info")?;
    let http = reqwest::Client::new();
    let base = serve.http.clone();
    let key = zedops_proto::sign::KeyPair::from_seed([7; 32]).public_hex();
    let before = peak_rss_kib(serve.proc.pid())?;

    // 64 MiB bodies, declared and streamed: refused without being held.
    let big = vec![b'x'; 64 << 20];
    let r = http
        .post(format!("{base}/api/v1/enroll"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413, "declared oversize body");
    }
    let chunks = futures_util::stream::iter(
        big.chunks(1 << 20)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let r = http
        .post(format!("{base}/api/v1/enroll"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(r) = r {
        assert!(
            r.status().is_client_error(),
            "streamed oversize body: {}",
            r.status()
        );
    }
    let grown = peak_rss_kib(serve.proc.pid())?.saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "serve's peak RSS grew by {grown} KiB for 64 MiB bodies"
    );

    // A name with a line break is refused before any lookup, and forges no log line.
    let forged = "evil\nINFO zedops: forged line";
    let (s, v) = enroll(
        &http,
        &base,
        json!({"name": forged, "token": "zde_x_y", "public_key": key}),
    )
    .await?;
    assert_eq!(s, 400, "{v}");
    assert!(
        !serve
            .logs()
            .lines()
            .any(|l| l.starts_with("INFO zedops: forged line")),
        "a forged log line"
    );

    // No name oracle: an unknown agent and a wrong token for a known one read the same.
    let known = unique("known");
    let r = http
        .post(format!("{base}/api/v1/agents"))
        .bearer_auth(&serve.admin_token)
        .json(&json!({"name": known}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    let unknown = unique("unknown");
    let token = |n: &str| format!("zde_{n}_{}", "0".repeat(48));
    let (s1, v1) = enroll(
        &http,
        &base,
        json!({"name": known, "token": token(&known), "public_key": key}),
    )
    .await?;
    let (s2, v2) = enroll(
        &http,
        &base,
        json!({"name": unknown, "token": token(&unknown), "public_key": key}),
    )
    .await?;
    assert_eq!((s1, s2), (401, 401), "{v1} {v2}");
    let text = |v: &Value, n: &str| v["message"].as_str().unwrap_or_default().replace(n, "NAME");
    assert_eq!(
        text(&v1, &known),
        text(&v2, &unknown),
        "the answers tell the names apart"
    );

    // Junk enrollments until the rate limit answers; the audit log keeps one digest of them.
    let mut limited = false;
    for i in 0..40 {
        let n = format!("junk-{i}");
        let (s, _) = enroll(
            &http,
            &base,
            json!({"name": n, "token": token(&n), "public_key": key}),
        )
        .await?;
        if s == 429 {
            limited = true;
            break;
        }
        assert_eq!(s, 401);
    }
    assert!(limited, "no rate limit on unauthenticated enrollments");
    let audit: Vec<Value> = http
        .get(format!("{base}/api/v1/audit?limit=1000"))
        .bearer_auth(&serve.admin_token)
        .send()
        .await?
        .json()
        .await?;
    let failures = audit
        .iter()
        .filter(|r| r["action"] == "agent.enroll" && r["outcome"] != "ok")
        .count();
    assert!(
        failures <= 1,
        "{failures} audit records for failed enrollments"
    );
    assert!(
        audit.iter().any(|r| r["action"] == "agent.register"),
        "the real records are still there: {audit:?}"
    );
    // Authenticated routes are not rate-limited.
    for _ in 0..30 {
        let r = http
            .get(format!("{base}/api/v1/agents"))
            .bearer_auth(&serve.admin_token)
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 200);
    }
    Ok(())
}

/// Fuzzing from outside: random bodies and content types on every route that reads a body,
/// with and without a token. Each answer is a 4xx with a JSON `{code, message}`, and the server
/// keeps answering. Bounded: 300 requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_get_json_errors() -> anyhow::Result<()> {
    use rand::Rng;
    init_logs();
    let serve = Serve::start(&[], "warn")?;
    let http = reqwest::Client::new();
    let routes = [
        "/api/v1/tokens",
        "/api/v1/agents",
        "/api/v1/mqtt-users",
        "/api/v1/enroll",
        "/api/v1/agents/nobody/containers/web/stop",
    ];
    let samples: [&[u8]; 6] = [
        br#"{"name":"#,
        br#"{"name":"x","role":"god"}"#,
        br#"{"name":["a"]}"#,
        b"\xff\xfe\x00",
        br#"{"name":"x","token":1,"public_key":null}"#,
        b"null",
    ];
    let mut rng = rand::rng();
    for i in 0..300usize {
        let route = routes[i % routes.len()];
        let body: Vec<u8> = if rng.random_bool(0.5) {
            samples[rng.random_range(0..samples.len())].to_vec()
        } else {
            (0..rng.random_range(0..300))
                .map(|_| rng.random::<u8>())
                .collect()
        };
        let ct = [
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
        ][i % 3];
        let mut rb = http
            .post(format!("{}{route}", serve.http))
            .header("content-type", ct)
            .body(body.clone())
            .timeout(Duration::from_secs(10));
        if i % 4 != 0 {
            rb = rb.bearer_auth(&serve.admin_token);
        }
        let r = rb.send().await.context("the server stopped answering")?;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status == 200 {
            continue; // random bytes that happen to be a valid request
        }
        assert!(
            (400..500).contains(&status) || status == 503,
            "{route} answered {status} to {:?}: {v}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            v["code"].is_string() && v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{route} answered {status} without {{code, message}}: {v}"
        );
    }
    let r = http
        .get(format!("{}/api/v1/agents", serve.http))
        .bearer_auth(&serve.admin_token)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    Ok(())
}
