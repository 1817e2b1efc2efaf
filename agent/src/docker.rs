//! The Docker driver: bollard against the local engine (unix socket or `DOCKER_HOST`, API version
//! negotiated so older engines work), container resolution, actions, and conversion into the
//! `zedops-proto` types. Every call has a deadline; connection failures become
//! `docker_unavailable`, engine refusals keep their meaning (`not_found`, `conflict`, …).

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
    /// Connects and negotiates the API version. On success the driver becomes available.
    pub async fn connect(&self) -> Result<Docker, String> {
        let addr = self.target.describe();
        let docker = self
            .target
            .connect()
            .map_err(|e| format!("cannot reach Docker at {addr}: {e}"))?;
        let docker = tokio::time::timeout(CALL_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| format!("Docker at {addr} did not answer within {CALL_TIMEOUT:?}"))?
            .map_err(|e| format!("cannot reach Docker at {addr}: {}", short(&e)))?;
        let version = tokio::time::timeout(CALL_TIMEOUT, docker.version())
            .await
            .map_err(|_| format!("Docker at {addr} did not answer within {CALL_TIMEOUT:?}"))?
            .map_err(|e| format!("cannot reach Docker at {addr}: {}", short(&e)))?;
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

/// What [`Driver::moment`] reads.
struct Moment {
    state: ContainerState,
    started_at: Option<String>,
    finished_at: Option<String>,
}

/// A resolved container: its full ID, its name and its state when resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub id: String,
    pub name: String,
    pub state: ContainerState,
}

impl Driver {
    pub fn status(&self) -> DockerStatus {
        self.status.borrow().clone()
    }

    fn docker(&self) -> Result<Docker, ErrorBody> {
        match self.client.borrow().clone() {
            Some(d) => Ok(d),
            None => {
                let reason = self
                    .status
                    .borrow()
                    .error
                    .clone()
                    .unwrap_or_else(|| "Docker is not connected".into());
                Err(ErrorBody::new(
                    ErrorCode::DockerUnavailable,
                    format!("Docker is unavailable on agent {}: {reason}", self.agent),
                ))
            }
        }
    }

    async fn call<T, F>(&self, what: &str, limit: Duration, fut: F) -> Result<T, ErrorBody>
    where
        F: std::future::Future<Output = Result<T, BollardError>>,
    {
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r.map_err(|e| self.map_error(what, e)),
            Err(_) => Err(ErrorBody::new(
                ErrorCode::DockerError,
                format!(
                    "Docker on agent {} did not finish {what} within {limit:?}",
                    self.agent
                ),
            )),
        }
    }

    fn map_error(&self, what: &str, e: BollardError) -> ErrorBody {
        match e {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => {
                let code = match status_code {
                    404 => ErrorCode::NotFound,
                    409 => ErrorCode::Conflict,
                    400 => ErrorCode::BadRequest,
                    _ => ErrorCode::DockerError,
                };
                ErrorBody::new(
                    code,
                    format!(
                        "Docker refused to {what} on agent {}: {message}",
                        self.agent
                    ),
                )
            }
            BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. } => {
                ErrorBody::new(
                    ErrorCode::DockerError,
                    format!(
                        "Docker on agent {} sent an unexpected answer to {what}: {}",
                        self.agent,
                        short(&e)
                    ),
                )
            }
            other => ErrorBody::new(
                ErrorCode::DockerUnavailable,
                format!(
                    "Docker is unavailable on agent {} ({what} failed): {}",
                    self.agent,
                    short(&other)
                ),
            ),
        }
    }

    /// `docker ps` (`all` adds stopped containers), sorted by name.
    pub async fn list(&self, all: bool) -> Result<Vec<Container>, ErrorBody> {
        let docker = self.docker()?;
        let opts = ListContainersOptionsBuilder::default().all(all).build();
        let rows = self
            .call(
                "list containers",
                CALL_TIMEOUT,
                docker.list_containers(Some(opts)),
            )
            .await?;
        let mut out: Vec<Container> = rows.into_iter().filter_map(from_summary).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One container's list row, by full ID.
    pub async fn row(&self, id: &str) -> Result<Container, ErrorBody> {
        let docker = self.docker()?;
        let filters = HashMap::from([("id", vec![id])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let rows = self
            .call(
                "list containers",
                CALL_TIMEOUT,
                docker.list_containers(Some(opts)),
            )
            .await?;
        rows.into_iter()
            .filter_map(from_summary)
            .find(|c| c.id == id)
            .ok_or_else(|| {
                ErrorBody::not_found(format!(
                    "container {id} disappeared from agent {}",
                    self.agent
                ))
            })
    }

    /// Resolves a reference: exact name first, then a unique ID prefix (≥ 4 hex digits).
    /// An ambiguous prefix is a `conflict`, never a guess.
    pub async fn resolve(&self, r: &ContainerRef) -> Result<Resolved, ErrorBody> {
        Ok(self.resolve_inspect(r).await?.0)
    }

    /// Resolves `r` with one inspect call (Docker looks up a full ID, a name, then an ID prefix:
    /// the same order as ours for every reference [`resolve_in`] accepts), and returns the
    /// inspect too when it came from that call. Whatever the inspect cannot settle — not found,
    /// an ambiguous prefix, a prefix shorter than ours — is decided by the full list, so the
    /// answers and messages are exactly those of [`resolve_in`]. One call instead of a full list
    /// keeps an action's cost independent of how many containers the host has.
    async fn resolve_inspect(
        &self,
        r: &ContainerRef,
    ) -> Result<(Resolved, Option<ContainerInspectResponse>), ErrorBody> {
        let docker = self.docker()?;
        let first = self
            .call(
                "inspect the container",
                CALL_TIMEOUT,
                docker.inspect_container(r.as_str(), None::<InspectContainerOptions>),
            )
            .await;
        match first {
            Ok(ins) => {
                if let Some(t) = resolved_by_inspect(&ins, r) {
                    return Ok((t, Some(ins)));
                }
            }
            Err(e) if e.code == ErrorCode::DockerUnavailable => return Err(e),
            Err(_) => {}
        }
        let all = self.list(true).await?;
        Ok((resolve_in(&all, r, &self.agent)?, None))
    }

    pub async fn inspect(&self, r: &ContainerRef) -> Result<ContainerDetail, ErrorBody> {
        let (target, ins) = self.resolve_inspect(r).await?;
        let ins = match ins {
            Some(i) => i,
            None => {
                let docker = self.docker()?;
                self.call(
                    "inspect the container",
                    CALL_TIMEOUT,
                    docker.inspect_container(&target.id, None::<InspectContainerOptions>),
                )
                .await?
            }
        };
        let row = self.row(&target.id).await?;
        Ok(detail(row, ins))
    }

    pub async fn start(&self, t: &Resolved) -> Result<bool, ErrorBody> {
        let before = self.moment(&t.id).await?;
        if matches!(
            before.state,
            ContainerState::Running | ContainerState::Restarting
        ) {
            return Ok(false);
        }
        if before.state == ContainerState::Paused {
            return Err(ErrorBody::conflict(format!(
                "container {} on agent {} is paused: unpause it instead of starting it",
                t.name, self.agent
            )));
        }
        let docker = self.docker()?;
        self.call(
            "start the container",
            CALL_TIMEOUT,
            docker.start_container(&t.id, None::<StartContainerOptions>),
        )
        .await?;
        Ok(self.moment(&t.id).await?.started_at != before.started_at)
    }

    pub async fn stop(&self, t: &Resolved, grace: u32) -> Result<bool, ErrorBody> {
        let before = self.moment(&t.id).await?;
        if !matches!(
            before.state,
            ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
        ) {
            return Ok(false);
        }
        let docker = self.docker()?;
        let opts = StopContainerOptionsBuilder::default()
            .t(grace as i32)
            .build();
        let limit = Duration::from_secs(grace.into()) + STOP_SLACK;
        self.call(
            "stop the container",
            limit,
            docker.stop_container(&t.id, Some(opts)),
        )
        .await?;
        Ok(self.moment(&t.id).await?.finished_at != before.finished_at)
    }

    /// A container's state and its last start and finish, fresh from the engine. Start and stop
    /// tell "changed" by these: Docker answers 304 when the container already was in that state,
    /// and bollard 0.21 returns 304 as `Ok` (`docker.rs`: `s.is_success() || s == NOT_MODIFIED`),
    /// so the answer alone cannot say (and a reference resolved a moment ago may be stale).
    async fn moment(&self, id: &str) -> Result<Moment, ErrorBody> {
        let docker = self.docker()?;
        let ins = self
            .call(
                "inspect the container",
                CALL_TIMEOUT,
                docker.inspect_container(id, None::<InspectContainerOptions>),
            )
            .await?;
        let state = ins.state.unwrap_or_default();
        Ok(Moment {
            state: state
                .status
                .as_ref()
                .and_then(enum_str)
                .map(|st| ContainerState::from_docker(&st))
                .unwrap_or(ContainerState::Unknown),
            started_at: state.started_at,
            finished_at: state.finished_at,
        })
    }

    pub async fn restart(&self, t: &Resolved, grace: u32) -> Result<bool, ErrorBody> {
        let docker = self.docker()?;
        let opts = RestartContainerOptionsBuilder::default()
            .t(grace as i32)
            .build();
        let limit = Duration::from_secs(grace.into()) + STOP_SLACK;
        self.call(
            "restart the container",
            limit,
            docker.restart_container(&t.id, Some(opts)),
        )
        .await?;
        Ok(true)
    }

    pub async fn kill(&self, t: &Resolved, signal: &str) -> Result<bool, ErrorBody> {
        if !matches!(
            t.state,
            ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
        ) {
            return Err(ErrorBody::conflict(format!(
                "container {} on agent {} is not running ({}), so it cannot be sent {signal}",
                t.name, self.agent, t.state
            )));
        }
        let docker = self.docker()?;
        let opts = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        self.call(
            "kill the container",
            CALL_TIMEOUT,
            docker.kill_container(&t.id, Some(opts)),
        )
        .await?;
        Ok(true)
    }

    pub async fn pause(&self, t: &Resolved) -> Result<bool, ErrorBody> {
        match t.state {
            ContainerState::Paused => return Ok(false),
            ContainerState::Running => {}
            other => {
                return Err(ErrorBody::conflict(format!(
                    "container {} on agent {} is not running ({other}), so it cannot be paused",
                    t.name, self.agent
                )))
            }
        }
        let docker = self.docker()?;
        self.call(
            "pause the container",
            CALL_TIMEOUT,
            docker.pause_container(&t.id),
        )
        .await?;
        Ok(true)
    }

    pub async fn unpause(&self, t: &Resolved) -> Result<bool, ErrorBody> {
        if t.state != ContainerState::Paused {
            return Ok(false);
        }
        let docker = self.docker()?;
        self.call(
            "unpause the container",
            CALL_TIMEOUT,
            docker.unpause_container(&t.id),
        )
        .await?;
        Ok(true)
    }

    /// The last `tail` lines, bounded to `max_bytes` (oldest lines dropped first).
    pub async fn logs(
        &self,
        t: &Resolved,
        tail: u32,
        timestamps: bool,
        max_bytes: usize,
    ) -> Result<Logs, ErrorBody> {
        let docker = self.docker()?;
        let tail = tail.to_string();
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .timestamps(timestamps)
            .tail(&tail)
            .build();
        let collect = async {
            let mut stream = docker.logs(&t.id, Some(opts));
            let mut lines = std::collections::VecDeque::new();
            let mut bytes = 0usize;
            let mut truncated = false;
            while let Some(item) = stream.next().await {
                let (stream_name, message) = match item? {
                    bollard::container::LogOutput::StdErr { message } => ("stderr", message),
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => ("stdout", message),
                    bollard::container::LogOutput::StdIn { .. } => continue,
                };
                let text = String::from_utf8_lossy(&message)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                // The encoded size counts: JSON escaping grows control characters up to 6×.
                bytes += LogLine::encoded_len(stream_name, &text);
                lines.push_back(LogLine {
                    stream: stream_name.to_owned(),
                    text,
                });
                while bytes > max_bytes {
                    match lines.pop_front() {
                        Some(l) => {
                            bytes -= LogLine::encoded_len(&l.stream, &l.text);
                            truncated = true;
                        }
                        None => break,
                    }
                }
            }
            Ok::<_, BollardError>(Logs {
                container: t.name.clone(),
                lines: lines.into(),
                truncated,
            })
        };
        self.call("read the logs", CALL_TIMEOUT, collect).await
    }
}

/// Resolution against a container list; pure, so it is unit-tested.
pub fn resolve_in(all: &[Container], r: &ContainerRef, agent: &str) -> Result<Resolved, ErrorBody> {
    let pick = |c: &Container| Resolved {
        id: c.id.clone(),
        name: c.name.clone(),
        state: c.state,
    };
    if let Some(c) = all
        .iter()
        .find(|c| c.name == r.as_str() || c.id == r.as_str())
    {
        return Ok(pick(c));
    }
    if r.could_be_id() {
        let prefix = r.as_str().to_ascii_lowercase();
        let matches: Vec<&Container> = all.iter().filter(|c| c.id.starts_with(&prefix)).collect();
        match matches.as_slice() {
            [one] => return Ok(pick(one)),
            [] => {}
            many => {
                let names: Vec<String> = many
                    .iter()
                    .map(|c| format!("{} ({})", c.name, c.short_id))
                    .collect();
                return Err(ErrorBody::conflict(format!(
                    "{r} is ambiguous on agent {agent}: it matches {}; use a longer ID prefix or the name",
                    names.join(", ")
                )));
            }
        }
    }
    Err(ErrorBody::not_found(format!(
        "no container named {r} on agent {agent}"
    )))
}

/// The container an inspect by reference found, when our rules agree that `r` names it: its
/// name, its full ID, or (at least 4 hex digits) a prefix of its ID. Docker also accepts shorter
/// prefixes; those are left to [`resolve_in`] (which refuses them).
fn resolved_by_inspect(ins: &ContainerInspectResponse, r: &ContainerRef) -> Option<Resolved> {
    let id = ins.id.clone()?;
    let name = ins.name.as_deref()?.trim_start_matches('/').to_owned();
    let by_prefix = r.could_be_id() && id.starts_with(&r.as_str().to_ascii_lowercase());
    if !(name == r.as_str() || id == r.as_str() || by_prefix) {
        return None;
    }
    let state = ins
        .state
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(enum_str)
        .map(|st| ContainerState::from_docker(&st))
        .unwrap_or(ContainerState::Unknown);
    Some(Resolved { id, name, state })
}

/// Serde's name for an enum value (bollard's enums serialize to Docker's spelling).
fn enum_str<T: Serialize>(v: &T) -> Option<String> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn from_summary(s: ContainerSummary) -> Option<Container> {
    let id = s.id?;
    let name = s
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_else(|| id.chars().take(12).collect());
    let state = s
        .state
        .as_ref()
        .and_then(enum_str)
        .map(|st| ContainerState::from_docker(&st))
        .unwrap_or(ContainerState::Unknown);
    let status = s.status.unwrap_or_default();
    let health = s
        .health
        .as_ref()
        .and_then(|h| h.status.as_ref())
        .and_then(enum_str)
        .filter(|h| h != "none")
        .or_else(|| health_from_status(&status));
    let created_at = s
        .created
        .and_then(|t| Utc.timestamp_opt(t, 0).single())
        .unwrap_or_default();
    let mut ports: Vec<Port> = s
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| Port {
            private_port: p.private_port,
            public_port: p.public_port,
            protocol: p
                .typ
                .as_ref()
                .and_then(enum_str)
                .unwrap_or_else(|| "tcp".into()),
            ip: p.ip.filter(|ip| !ip.is_empty()),
        })
        .collect();
    ports.sort_by(|a, b| {
        (a.private_port, a.public_port, &a.ip).cmp(&(b.private_port, b.public_port, &b.ip))
    });
    Some(Container {
        short_id: id.chars().take(12).collect(),
        id,
        name,
        image: s.image.unwrap_or_default(),
        image_id: s.image_id.unwrap_or_default(),
        command: s.command.unwrap_or_default(),
        state,
        status,
        health,
        created_at,
        ports,
        labels: s
            .labels
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
    })
}

/// Older engines only say "(healthy)" inside the status text.
fn health_from_status(status: &str) -> Option<String> {
    ["healthy", "unhealthy", "health: starting"]
        .iter()
        .find(|h| status.contains(&format!("({h})")))
        .map(|h| h.trim_start_matches("health: ").to_owned())
}

fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s?).ok()?.with_timezone(&Utc);
    // Docker reports "0001-01-01T00:00:00Z" for "never".
    (t.timestamp() > 0).then_some(t)
}

fn detail(container: Container, ins: ContainerInspectResponse) -> ContainerDetail {
    let state = ins.state.unwrap_or_default();
    let mut env_names: Vec<String> = ins
        .config
        .as_ref()
        .and_then(|c| c.env.as_ref())
        .map(|env| {
            env.iter()
                .map(|kv| kv.split('=').next().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    env_names.sort();
    let mounts = ins
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| Mount {
            kind: m
                .typ
                .as_ref()
                .and_then(enum_str)
                .unwrap_or_else(|| "bind".into()),
            source: m.source.filter(|s| !s.is_empty()),
            destination: m.destination.unwrap_or_default(),
            read_write: m.rw.unwrap_or(false),
        })
        .collect();
    let mut networks: Vec<NetworkAttachment> = ins
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| NetworkAttachment {
            name,
            ip_address: ep.ip_address.filter(|ip| !ip.is_empty()),
        })
        .collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    ContainerDetail {
        container,
        started_at: parse_time(state.started_at.as_deref()),
        finished_at: parse_time(state.finished_at.as_deref()),
        exit_code: state.exit_code,
        restart_count: ins.restart_count.unwrap_or(0),
        mounts,
        networks,
        env_names,
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

    fn c(name: &str, id: &str) -> Container {
        Container {
            id: id.into(),
            short_id: id.chars().take(12).collect(),
            name: name.into(),
            image: "i".into(),
            image_id: "x".into(),
            command: "c".into(),
            state: ContainerState::Running,
            status: "Up".into(),
            health: None,
            created_at: Utc::now(),
            ports: vec![],
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn resolution() {
        let all = vec![
            c("web-1", "abcd1111"),
            c("web-2", "abcd2222"),
            c("db", "ffff0000"),
        ];
        let r = |s: &str| resolve_in(&all, &ContainerRef::new(s).unwrap(), "m");
        assert_eq!(r("web-1").unwrap().id, "abcd1111");
        assert_eq!(r("ffff").unwrap().name, "db");
        assert_eq!(r("abcd2").unwrap().name, "web-2");
        let amb = r("abcd").unwrap_err();
        assert_eq!(amb.code, ErrorCode::Conflict);
        assert!(
            amb.message.contains("web-1") && amb.message.contains("web-2"),
            "{amb}"
        );
        let nf = r("web-9").unwrap_err();
        assert_eq!(nf.code, ErrorCode::NotFound);
        assert_eq!(nf.message, "no container named web-9 on agent m");
        // Three hex digits are never taken as a prefix.
        assert_eq!(r("fff").unwrap_err().code, ErrorCode::NotFound);
    }

    #[test]
    fn health_text() {
        assert_eq!(
            health_from_status("Up 2 minutes (healthy)").as_deref(),
            Some("healthy")
        );
        assert_eq!(
            health_from_status("Up (health: starting)").as_deref(),
            Some("starting")
        );
        assert_eq!(health_from_status("Up 2 minutes"), None);
    }
}
