//! The connection to the API: server URL, bearer token, trusted CA, and one request with its
//! error mapping.

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ClientError;

/// How long connecting may take, whatever the request's own deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The deadline of requests that do not set their own.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one zedops server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    server: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of `server` (`http://` or `https://`), sending `token` as the bearer token when
    /// given, and trusting the PEM certificate `ca_file` besides the system's roots.
    pub fn new(
        server: &str,
        token: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let server = server.trim_end_matches('/').to_owned();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "the server URL {server:?} must start with http:// or https://"
            )));
        }
        let mut b = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        if let Some(path) = ca_file {
            b = b.add_root_certificate(read_ca(path)?);
        }
        let http = b
            .build()
            .map_err(|e| ClientError::Config(format!("cannot set up HTTP: {e}")))?;
        Ok(Self {
            server,
            token,
            http,
        })
    }

    /// The server's base URL, without a trailing slash.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A request to `path` (which starts with `/`), with the token and a deadline.
    pub(crate) fn builder(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Option<Duration>,
    ) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{path}", self.server));
        if let Some(t) = timeout {
            rb = rb.timeout(t);
        }
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    /// Sends a request with an optional JSON body and decodes the JSON answer.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let mut rb = self.builder(method, path, Some(timeout));
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = self.send(rb).await?;
        let bytes = resp.bytes().await.map_err(|e| self.transport(&e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: format!("{}{path}", self.server),
            cause: e.to_string(),
        })
    }

    /// Sends a request; a non-2xx answer becomes [`ClientError::Api`].
    pub(crate) async fn send(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = rb.send().await.map_err(|e| self.transport(&e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(ClientError::from_answer(status, &body))
    }

    /// A transport failure as a timeout or an unreachable server, with the innermost cause.
    pub(crate) fn transport(&self, e: &reqwest::Error) -> ClientError {
        if e.is_timeout() {
            return ClientError::Timeout {
                server: self.server.clone(),
            };
        }
        let mut cause = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            cause = s.to_string();
            src = s.source();
        }
        ClientError::Unreachable {
            server: self.server.clone(),
            cause,
        }
    }
}

fn read_ca(path: &Path) -> Result<reqwest::Certificate, ClientError> {
    let pem = std::fs::read(path).map_err(|e| {
        ClientError::Config(format!("cannot read the CA file {}: {e}", path.display()))
    })?;
    reqwest::Certificate::from_pem(&pem).map_err(|e| {
        ClientError::Config(format!(
            "the CA file {} is not a PEM certificate: {e}",
            path.display()
        ))
    })
}

/// Percent-encodes a path segment or query value.
pub(crate) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http() {
        assert!(matches!(
            Client::new("mqtt://h:1", None, None),
            Err(ClientError::Config(_))
        ));
        assert_eq!(
            Client::new("http://h:1/", None, None).unwrap().server(),
            "http://h:1"
        );
    }

    #[test]
    fn encoding() {
        assert_eq!(enc("web-1.a_b"), "web-1.a_b");
        assert_eq!(enc("a b/c&d"), "a%20b%2Fc%26d");
    }
}
