//! Where the client commands connect: server URL and token resolution (flags > environment >
//! config file > this host's admin token) for the typed client of `zedops-client`.

use std::path::PathBuf;

use zedops_client::{Client, ClientError};

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

fn is_loopback(server: &str) -> bool {
    let rest = server.split("://").nth(1).unwrap_or(server);
    rest.starts_with("127.") || rest.starts_with("localhost") || rest.starts_with("[::1]")
}

/// A client of the API (`zedops_client`), with server and token resolved: flags > environment
/// (clap fills both) > config file > the admin token of a server on this host (its data dir's
/// `admin.token`, when readable).
pub fn connect(
    server: Option<String>,
    token: Option<String>,
    ca_file: Option<&std::path::Path>,
) -> Result<Client, ClientError> {
    let (server, token) = resolve(server, token);
    Client::new(&server, token, ca_file)
}

/// The server URL and token the client commands (and plugins) use: flags and environment
/// (`server`, `token`, as clap filled them) > config file > the default server and, on
/// loopback, this host's admin token.
pub fn resolve(server: Option<String>, token: Option<String>) -> (String, Option<String>) {
    let cfg = ClientConfig::load();
    let server = server
        .or(cfg.server)
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let token = token.or(cfg.token).or_else(|| local_admin_token(&server));
    (server, token)
}

/// The admin token of a server on this host, for a loopback `server`.
fn local_admin_token(server: &str) -> Option<String> {
    if !is_loopback(server) {
        return None;
    }
    let dir = std::env::var_os("ZEDOPS_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(crate::paths::data_dir);
    std::fs::read_to_string(crate::paths::admin_token_file(&dir))
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
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
}
