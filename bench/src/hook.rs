//! Scenario 10: what one question of an external broker costs the API's hook (issue 19), on the
//! embedded database and on PostgreSQL.
//!
//! `zedops serve --broker-auth-hook` (in front of a Mosquitto it only logs in to) with `n`
//! registered agents. One keep-alive HTTP connection asks `POST /api/v1/broker/acl` about a
//! publish of each agent twice: the first question reads the agent's record from the database,
//! the second finds it among the identities the hook keeps for 10 s (`api/src/hook_identities.rs`).
//! `GET /healthz` on the same connection is the HTTP floor. The three alternate in chunks, so
//! that the machine's noise falls on all of them alike.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{ensure, Context};
use zedops_client::{Client, NewAgent};
use zedops_tests::postgres::Postgres;
use zedops_tests::procs::{Mosquitto, Serve};

use crate::http::{Conn, Target};
use crate::stats::{Samples, Table};
use crate::Opts;

const ACL: &str = "/api/v1/broker/acl";
/// Agents asked about per chunk: each chunk's second round comes well within the hook's 10 s.
const CHUNK: usize = 100;

pub async fn run(o: &Opts) -> anyhow::Result<Vec<Table>> {
    let n = if o.quick { 300 } else { 3000 };
    let mosq = Mosquitto::start().await.context("starting Mosquitto")?;
    let mut t = Table::latency(
        "10. Broker hook: one ACL question (POST /api/v1/broker/acl), identity read from the database or kept",
    );
    measure(&mut t, "SQLite (the embedded default)", &mosq, None, n).await?;
    match Postgres::start().await {
        Ok(pg) => measure(&mut t, "PostgreSQL", &mosq, Some(&pg.url), n).await?,
        Err(e) => t.note(format!("PostgreSQL not measured: {e:#}")),
    }
    t.note(format!("{n} registered agents per database, each asked about once (its record read) and once again right after (the identity kept for 10 s), in chunks of {CHUNK} alternating with GET /healthz; one keep-alive HTTP/1.1 connection, requests back to back. A connecting agent raises ~30 questions (login, 2 subscriptions, status, snapshot, 25 container topics): before this cache each read the database."));
    Ok(vec![t])
}

/// One database's three rows.
async fn measure(
    t: &mut Table,
    db: &str,
    mosq: &Mosquitto,
    database: Option<&str>,
    n: usize,
) -> anyhow::Result<()> {
    let serve = serve(mosq, database).await?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    let names: Vec<String> = (0..n).map(|i| format!("hook-{i:05}")).collect();
    for name in &names {
        let new = NewAgent {
            name: name.clone(),
            ttl_s: None,
        };
        admin.register_agent(&new).await?;
    }
    let addr: SocketAddr = serve.http.trim_start_matches("http://").parse()?;
    let mut c = Conn::open(&Target::Tcp(addr)).await?;
    for _ in 0..200 {
        c.ok("GET", "/healthz").await?;
        ask(&mut c, "hook-warm-up").await?;
    }
    let (mut read, mut kept, mut floor) = (Samples::new(), Samples::new(), Samples::new());
    for chunk in names.chunks(CHUNK) {
        for a in chunk {
            let t0 = Instant::now();
            ask(&mut c, a).await?;
            read.push(t0.elapsed());
        }
        for a in chunk {
            let t0 = Instant::now();
            ask(&mut c, a).await?;
            kept.push(t0.elapsed());
        }
        for _ in chunk {
            let t0 = Instant::now();
            c.ok("GET", "/healthz").await?;
            floor.push(t0.elapsed());
        }
    }
    t.lat(
        &format!("{db}: the first question of a connection (its record read)"),
        &read,
        "reference",
    );
    t.lat(
        &format!("{db}: every later question (the identity kept)"),
        &kept,
        "no target: the database read saved",
    );
    t.lat(
        &format!("{db}: reference GET /healthz (the HTTP floor)"),
        &floor,
        "reference",
    );
    Ok(())
}

/// What the benchmark's broker would show the hook (`--broker-auth-hook-secret`).
const HOOK_SECRET: &str = "zedops-bench-hook-secret";

async fn serve(mosq: &Mosquitto, database: Option<&str>) -> anyhow::Result<Serve> {
    let broker = format!("mqtt://{}", mosq.addr);
    let mut args = vec![
        "--broker",
        broker.as_str(),
        "--broker-username",
        "zedops-api",
        "--broker-password",
        "zedops-bench-hook",
        "--broker-auth-hook",
        "--broker-auth-hook-secret",
        HOOK_SECRET,
    ];
    if let Some(url) = database {
        args.extend(["--database", url]);
    }
    let serve = Serve::start(&args, "warn")?;
    serve.ready().await?;
    Ok(serve)
}

/// A question about a publish of agent `a` to one of its per-container topics; it must be allowed.
async fn ask(c: &mut Conn, a: &str) -> anyhow::Result<()> {
    let form = format!(
        "clientid=zedops-agent-{a}&username={a}&topic=zedops/v1/agents/{a}/containers/web&access=2"
    );
    let (status, body) = c.post_form(ACL, &form, HOOK_SECRET).await?;
    ensure!(
        status == 200,
        "{ACL}: HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    // "hook-warm-up" is no agent: refused, which costs the same read.
    let allowed = body.windows(7).any(|w| w == b"\"allow\"");
    ensure!(
        allowed || a == "hook-warm-up",
        "{a}'s publish was refused: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}
