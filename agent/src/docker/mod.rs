//! The Docker driver: bollard against the local engine (unix socket or `DOCKER_HOST`, API version
//! negotiated so older engines work), container resolution, actions, and conversion into the
//! `zedops-proto` types. Every call has a deadline; connection failures become
//! `docker_unavailable`, engine refusals keep their meaning (`not_found`, `conflict`, …).
//!
//! - this module: the engine's address, the driver and its control side, the event stream, the
//!   deadline and error mapping of every call;
//! - [`error`]: [`DriverError`], and its `{code, message}` on the wire;
//! - [`resolve`]: container references to containers, by inspect and by list;
//! - [`reads`]: list, row, inspect, logs (whole or followed);
//! - [`actions`]: start, stop, restart, kill, pause, unpause;
//! - [`exec`]: one command in a container, bounded and killed at its deadline;
//! - [`stats`]: CPU, memory, network, block I/O and PIDs, as `docker stats` computes them;
//! - [`convert`]: bollard's models to `zedops-proto`'s.

mod actions;
mod convert;
pub mod error;
mod exec;
mod reads;
mod resolve;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, ContainerSummary, EventMessage};
use bollard::query_parameters::{
    EventsOptionsBuilder, InspectContainerOptions, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RestartContainerOptionsBuilder,
    StartContainerOptions, StopContainerOptionsBuilder,
};
use bollard::Docker;
use chrono::{DateTime, TimeZone, Utc};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::watch;
use zedops_proto::ops::{LogLine, Logs};
use zedops_proto::{
    Container, ContainerDetail, ContainerRef, ContainerState, DockerAvailability, DockerStatus,
    ErrorBody, ErrorCode, Mount, NetworkAttachment, Port,
};

use convert::{detail, from_summary, state_of};
pub use error::DriverError;
pub use reads::{LogLines, LogQuery};
pub use resolve::{resolve_in, Resolved};
pub use stats::Sampler;

/// Deadline of quick engine calls (list, inspect, pause, …).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Extra time given to stop/restart beyond the grace period.
const STOP_SLACK: Duration = Duration::from_secs(15);

/// Where the engine is: `None` means `DOCKER_HOST`, else the local unix socket.
#[derive(Debug, Clone, Default)]
pub struct DockerTarget {
    pub host: Option<String>,
}

impl DockerTarget {
    fn connect(&self) -> Result<Docker, BollardError> {
        match &self.host {
            Some(h) => Docker::connect_with_host(h),
            None => Docker::connect_with_defaults(),
        }
    }

    /// A human description of the engine address, for messages.
    pub fn describe(&self) -> String {
        self.host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
    }
}

/// A connected engine, or the reason there is none. Cheap to clone.
#[derive(Clone)]
pub struct Driver {
    agent: String,
    client: watch::Receiver<Option<Docker>>,
    status: watch::Receiver<DockerStatus>,
}

/// The writing side, owned by the monitor task that (re)connects to the engine.
pub struct DriverControl {
    target: DockerTarget,
    client: watch::Sender<Option<Docker>>,
    status: watch::Sender<DockerStatus>,
}

/// Creates a driver that starts out unavailable until [`DriverControl::connect`] succeeds.
pub fn driver(agent: &str, target: DockerTarget) -> (Driver, DriverControl) {
    let (client_tx, client_rx) = watch::channel(None);
    let (status_tx, status_rx) =
        watch::channel(DockerStatus::unavailable("not connected to Docker yet"));
    (
        Driver {
            agent: agent.to_owned(),
            client: client_rx,
            status: status_rx,
        },
        DriverControl {
            target,
            client: client_tx,
            status: status_tx,
        },
    )
}

impl DriverControl {
    /// Connects and negotiates the API version. On success the driver becomes available; the
    /// error is `Unavailable`, with a reason a user can act on.
    pub async fn connect(&self) -> Result<Docker, DriverError> {
        let addr = self.target.describe();
        let unreachable = |e: &dyn std::fmt::Display| {
            DriverError::Unavailable(format!("cannot reach Docker at {addr}: {e}"))
        };
        let silent = |_| {
            DriverError::Unavailable(format!(
                "Docker at {addr} did not answer within {CALL_TIMEOUT:?}"
            ))
        };
        let docker = self.target.connect().map_err(|e| unreachable(&e))?;
        let docker = tokio::time::timeout(CALL_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(silent)?
            .map_err(|e| unreachable(&short(&e)))?;
        let version = tokio::time::timeout(CALL_TIMEOUT, docker.version())
            .await
            .map_err(silent)?
            .map_err(|e| unreachable(&short(&e)))?;
        let status = DockerStatus {
            state: DockerAvailability::Available,
            version: version.version,
            api_version: Some(docker.client_version().to_string()),
            error: None,
        };
        self.client.send_replace(Some(docker.clone()));
        self.status.send_replace(status);
        Ok(docker)
    }

    /// Marks the engine unavailable with a reason a user can act on.
    pub fn set_unavailable(&self, reason: String) {
        self.client.send_replace(None);
        self.status.send_replace(DockerStatus::unavailable(reason));
    }

    pub fn target(&self) -> &DockerTarget {
        &self.target
    }

    /// Checks that the engine still answers.
    pub async fn ping(&self) -> bool {
        let Some(docker) = self.client.borrow().clone() else {
            return false;
        };
        matches!(
            tokio::time::timeout(CALL_TIMEOUT, docker.ping()).await,
            Ok(Ok(_))
        )
    }
}

/// The container event stream, with no request timeout (it is meant to stay open).
pub fn container_events(docker: &Docker) -> impl Stream<Item = Result<EventMessage, BollardError>> {
    let docker = docker
        .clone()
        .with_timeout(Duration::from_secs(60 * 60 * 24 * 365));
    let filters = HashMap::from([("type", vec!["container"])]);
    let opts = EventsOptionsBuilder::default().filters(&filters).build();
    // The stream borrows nothing from `docker` once created, but bollard ties it to `&self`;
    // keep the client alive inside the stream.
    futures_util::stream::unfold(
        (
            docker.clone(),
            None::<std::pin::Pin<Box<dyn Stream<Item = _> + Send>>>,
            opts,
        ),
        |(docker, stream, opts)| async move {
            let mut stream = match stream {
                Some(s) => s,
                None => Box::pin(docker.events(Some(opts.clone()))),
            };
            let item = stream.next().await?;
            Some((item, (docker, Some(stream), opts)))
        },
    )
}

impl Driver {
    pub fn status(&self) -> DockerStatus {
        self.status.borrow().clone()
    }

    fn docker(&self) -> Result<Docker, DriverError> {
        match self.client.borrow().clone() {
            Some(d) => Ok(d),
            None => {
                let reason = self
                    .status
                    .borrow()
                    .error
                    .clone()
                    .unwrap_or_else(|| "Docker is not connected".into());
                Err(DriverError::Unavailable(format!(
                    "Docker is unavailable on agent {}: {reason}",
                    self.agent
                )))
            }
        }
    }

    async fn call<T, F>(&self, what: &str, limit: Duration, fut: F) -> Result<T, DriverError>
    where
        F: std::future::Future<Output = Result<T, BollardError>>,
    {
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r.map_err(|e| self.map_error(what, e)),
            Err(_) => Err(DriverError::TimedOut {
                what: what.to_owned(),
                agent: self.agent.clone(),
                limit,
            }),
        }
    }

    fn map_error(&self, what: &str, e: BollardError) -> DriverError {
        let (what, agent) = (what.to_owned(), self.agent.clone());
        match e {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => DriverError::Refused {
                what,
                agent,
                status: status_code,
                message,
            },
            BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. } => {
                DriverError::Unexpected {
                    what,
                    agent,
                    detail: short(&e),
                }
            }
            other => DriverError::Unavailable(format!(
                "Docker is unavailable on agent {agent} ({what} failed): {}",
                short(&other)
            )),
        }
    }
}

/// The first line of an error, without bollard's nested detail.
pub fn short(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn driver_errors_map_to_their_codes() {
        let refused = |status| DriverError::Refused {
            what: "start the container".into(),
            agent: "m".into(),
            status,
            message: "no".into(),
        };
        let code = |e: DriverError| ErrorBody::from(e).code;
        assert_eq!(code(refused(404)), ErrorCode::NotFound);
        assert_eq!(code(refused(409)), ErrorCode::Conflict);
        assert_eq!(code(refused(400)), ErrorCode::BadRequest);
        assert_eq!(code(refused(500)), ErrorCode::DockerError);
        assert_eq!(
            code(DriverError::Unavailable("x".into())),
            ErrorCode::DockerUnavailable
        );
        let body = ErrorBody::from(refused(500));
        assert_eq!(
            body.message,
            "Docker refused to start the container on agent m: no"
        );
    }
}
