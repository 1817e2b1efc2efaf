//! The server's one error type: what can keep `zedops serve` from starting.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A setting the operator gave cannot work (a file that cannot be read, a bad name).
    #[error("{0}")]
    Config(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged: remove it and re-enroll every agent")]
    DamagedKey { path: PathBuf },
    #[error(transparent)]
    Store(#[from] zedops_api::store::StoreError),
    #[error("the local agent cannot enroll: {0}")]
    Enroll(#[from] zedops_api::store::EnrollError),
    #[error(transparent)]
    Broker(#[from] zedops_broker::BrokerError),
    #[error("cannot listen for HTTP on {addr}: {source} (choose another address with --listen)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl ServerError {
    /// Whether the operator's settings are at fault (the CLI exits with its usage code).
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Config(_))
    }
}
