//! A bare HTTP/1.1 keep-alive client (hyper) over TCP or a unix socket, and a closed-loop load
//! generator. The same code measures the zedops API and the Docker Engine API, so the difference
//! between them is the servers', not the clients'.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::stats::Samples;

/// Where a server listens.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Target {
    /// The Docker Engine's socket (`DOCKER_HOST=unix://…`, else `/var/run/docker.sock`).
    pub fn docker() -> Self {
        let p = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
            .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
        Target::Unix(PathBuf::from(p))
    }
}

/// One keep-alive connection.
pub struct Conn {
    tx: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    pub async fn open(t: &Target) -> anyhow::Result<Self> {
        let (tx, host) = match t {
            Target::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await?;
                s.set_nodelay(true)?;
                let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
                tokio::spawn(conn);
                (tx, a.to_string())
            }
            Target::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .with_context(|| format!("connecting to {}", p.display()))?;
                let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
                tokio::spawn(conn);
                (tx, "docker".to_owned())
            }
        };
        Ok(Self { tx, host })
    }

    /// Sends a request and reads the whole body; returns status and body.
    pub async fn send(&mut self, method: &str, path: &str) -> anyhow::Result<(u16, Bytes)> {
        let req = self.request(method, path).body(Full::new(Bytes::new()))?;
        self.round_trip(req).await
    }

    /// A POST of a form (`application/x-www-form-urlencoded`) with a bearer secret, as brokers'
    /// HTTP hooks send.
    pub async fn post_form(
        &mut self,
        path: &str,
        form: &str,
        bearer: &str,
    ) -> anyhow::Result<(u16, Bytes)> {
        let req = self
            .request("POST", path)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Bearer {bearer}"))
            .body(Full::new(Bytes::from(form.to_owned())))?;
        self.round_trip(req).await
    }

    fn request(&self, method: &str, path: &str) -> hyper::http::request::Builder {
        hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("user-agent", "zedops-bench")
    }

    async fn round_trip(
        &mut self,
        req: hyper::Request<Full<Bytes>>,
    ) -> anyhow::Result<(u16, Bytes)> {
        self.tx.ready().await?;
        let resp = self.tx.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Like [`send`](Self::send), failing unless the status is 2xx or 304.
    pub async fn ok(&mut self, method: &str, path: &str) -> anyhow::Result<Bytes> {
        let (st, body) = self.send(method, path).await?;
        if !(200..300).contains(&st) && st != 304 {
            bail!(
                "{method} {path}: HTTP {st}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
        }
        Ok(body)
    }
}

/// Sequential round trips on one connection, after `warmup` unmeasured ones.
pub async fn sequential(
    t: &Target,
    method: &str,
    path: &str,
    warmup: usize,
    n: usize,
) -> anyhow::Result<Samples> {
    let mut c = Conn::open(t).await?;
    for _ in 0..warmup {
        c.ok(method, path).await?;
    }
    let mut s = Samples::new();
    for _ in 0..n {
        let t0 = Instant::now();
        c.ok(method, path).await?;
        s.push(t0.elapsed());
    }
    Ok(s)
}

/// Result of a closed-loop load run.
#[derive(Debug, Clone)]
pub struct Load {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: Samples,
    pub bytes: u64,
}

impl Load {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `conns` connections, each sending `GET path` back to back for `duration` (after a short warm-up).
pub async fn load(
    t: &Target,
    path: &str,
    conns: usize,
    duration: Duration,
) -> anyhow::Result<Load> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    // Warm-up: every connection opened and used once before the clock starts.
    let mut opened = Vec::new();
    for _ in 0..conns {
        let mut c = Conn::open(t).await?;
        c.ok("GET", path).await?;
        opened.push(c);
    }
    let start = Instant::now();
    for mut c in opened {
        let stop = stop.clone();
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::new();
            let (mut n, mut err, mut bytes) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                match c.ok("GET", &path).await {
                    Ok(b) => {
                        n += 1;
                        bytes += b.len() as u64;
                        s.push(t0.elapsed());
                    }
                    Err(_) => {
                        err += 1;
                        break;
                    }
                }
            }
            (s, n, err, bytes)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut out = Load {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Samples::new(),
        bytes: 0,
    };
    for t in tasks {
        let (s, n, e, b) = t.await?;
        out.latency.extend(&s);
        out.requests += n;
        out.errors += e;
        out.bytes += b;
    }
    out.elapsed = start.elapsed();
    Ok(out)
}
