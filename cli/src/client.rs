//! The HTTP client of the client commands: server URL and token resolution (flags > environment >
//! config file > this host's admin token), requests, and the mapping of API errors to exit codes.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::exit::{self, Exit};

/// Default API address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8420";

/// The client configuration file: `server = "…"` and `token = "…"` lines (TOML).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub server: Option<String>,
    pub token: Option<String>,
}

impl ClientConfig {
    pub fn path() -> PathBuf {
        crate::paths::config_dir().join("config.toml")
    }

    /// Reads the config file; a missing file is an empty config.
    pub fn load() -> Self {
        std::fs::read_to_string(Self::path())
            .map(|s| Self::parse(&s))
            .unwrap_or_default()
    }

    pub fn parse(text: &str) -> Self {
        let mut c = Self::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v
                .trim()
                .trim_matches('"')
                .replace("\\\"", "\"")
                .replace("\\\\", "\\");
            match k.trim() {
                "server" => c.server = Some(v),
                "token" => c.token = Some(v),
                _ => {}
            }
        }
        c
    }

    pub fn render(&self) -> String {
        let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::from("# zedops client configuration, written by `zedops login`.\n");
        if let Some(s) = &self.server {
            out.push_str(&format!("server = \"{}\"\n", q(s)));
        }
        if let Some(t) = &self.token {
            out.push_str(&format!("token = \"{}\"\n", q(t)));
        }
        out
    }
}

/// A connection to the API.
pub struct Client {
    pub server: String,
    token: Option<String>,
    http: reqwest::Client,
}

fn is_loopback(server: &str) -> bool {
    let rest = server.split("://").nth(1).unwrap_or(server);
    rest.starts_with("127.") || rest.starts_with("localhost") || rest.starts_with("[::1]")
}

impl Client {
    /// Resolves server and token: flags > environment (clap fills both) > config file > the admin
    /// token of a server on this host (its data dir's `admin.token`, when readable).
    pub fn new(
        server: Option<String>,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let cfg = ClientConfig::load();
        let server = server
            .or(cfg.server)
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned())
            .trim_end_matches('/')
            .to_owned();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(Exit::usage(format!(
                "--server {server:?} must start with http:// or https://"
            ))
            .into());
        }
        let token = token.or(cfg.token).or_else(|| {
            if !is_loopback(&server) {
                return None;
            }
            let dir = std::env::var_os("ZEDOPS_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(crate::paths::data_dir);
            std::fs::read_to_string(crate::paths::admin_token_file(&dir))
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
        });
        let http = http_client(ca_file)?;
        Ok(Self {
            server,
            token,
            http,
        })
    }

    /// Sends a request and decodes the JSON answer; API errors become [`Exit`]s with their code.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.server);
        let mut rb = self.http.request(method, &url).timeout(timeout);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &bytes).into());
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Exit::new(
                exit::ERROR,
                format!("{url} answered with something that is not the expected JSON: {e}"),
            )
            .into()
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.request(reqwest::Method::GET, path, None, Duration::from_secs(30))
            .await
    }

    /// The raw response of a streaming GET (SSE).
    pub async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.server);
        let mut rb = self.http.get(&url).header("accept", "text/event-stream");
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(api_error(status, &bytes).into());
        }
        Ok(resp)
    }

    fn transport_error(&self, e: &reqwest::Error) -> Exit {
        if e.is_timeout() {
            return Exit::new(
                exit::TIMEOUT,
                format!("{} did not answer in time", self.server),
            );
        }
        let mut cause = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            cause = s.to_string();
            src = s.source();
        }
        Exit::new(
            exit::ERROR,
            format!(
                "cannot reach the zedops server at {}: {cause} (is `zedops serve` running? set --server or ZEDOPS_SERVER)",
                self.server
            ),
        )
    }
}

/// An HTTP client that also trusts `ca_file` (PEM) when given.
pub fn http_client(ca_file: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| Exit::usage(format!("cannot read --ca-file {}: {e}", path.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            Exit::usage(format!(
                "--ca-file {} is not a PEM certificate: {e}",
                path.display()
            ))
        })?;
        b = b.add_root_certificate(cert);
    }
    Ok(b.build()?)
}

/// An API error body as an exit: 401/403 → 6, 404 → 3, 429/503 → 4, 504 → 5, 400 → 2, else 1.
pub fn api_error(status: u16, body: &[u8]) -> Exit {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("the server answered HTTP {status}"));
    let code = match status {
        401 | 403 => exit::AUTH,
        404 => exit::NOT_FOUND,
        429 | 503 => exit::UNAVAILABLE,
        504 => exit::TIMEOUT,
        400 => exit::USAGE,
        _ => exit::ERROR,
    };
    Exit::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trip() {
        let c = ClientConfig {
            server: Some("http://h:1".into()),
            token: Some("zdt_a_b\"c".into()),
        };
        assert_eq!(ClientConfig::parse(&c.render()), c);
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            api_error(
                404,
                br#"{"code":"not_found","message":"no container named x on agent m"}"#
            )
            .code,
            3
        );
        assert_eq!(api_error(503, b"").code, 4);
        assert_eq!(api_error(429, b"").code, 4);
        assert_eq!(api_error(504, b"").code, 5);
        assert_eq!(api_error(401, b"").code, 6);
        assert_eq!(
            api_error(500, b"oops").message,
            "the server answered HTTP 500"
        );
    }
}
