//! One typed method per operation of the API, in the order of `docs/protocol.md` § HTTP API. Each
//! method's deadline is the request's own (`timeout_s`, or the server's default) plus a margin, so
//! that the server's `504 timeout` arrives before the client gives up.

use std::time::Duration;

use reqwest::Method;
use zedops_proto::http::*;
use zedops_proto::ops::{self, ActionResult, CommandResult, Logs, Stats};
use zedops_proto::{Action, ContainerDetail, ContainerRef};

use crate::client::{enc, Client, DEFAULT_TIMEOUT};
use crate::error::ClientError;

/// What the client waits beyond a request's own deadline for the server's answer.
const MARGIN: Duration = Duration::from_secs(5);
/// For commands (exec, operator-defined actions): the server's slack beyond the command's own
/// deadline (`COMMAND_SLACK` in the API), waited for on top of [`MARGIN`].
const COMMAND_SLACK: Duration = Duration::from_secs(20);

/// Options of `GET /api/v1/agents/{agent}/containers`.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Ask the agent now instead of the cache.
    pub live: bool,
    /// Include stopped containers (the server's default is true).
    pub all: Option<bool>,
    pub timeout_s: Option<u32>,
}

/// Options of a container action.
#[derive(Debug, Clone, Default)]
pub struct ActionOptions {
    /// Seconds between SIGTERM and SIGKILL (stop, restart).
    pub grace_s: Option<u32>,
    /// The signal of kill.
    pub signal: Option<String>,
    pub timeout_s: Option<u32>,
}

/// Options of `GET …/logs`.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    /// Lines from the end (the server's default is 100).
    pub tail: Option<u32>,
    pub timestamps: bool,
    /// Only lines since then: a duration back from now (`10m`) or an RFC 3339 time.
    pub since: Option<String>,
    pub timeout_s: Option<u32>,
}

/// `?k=v&…` of the pairs that have a value (empty when none has).
pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// The client-side deadline of a request whose server-side one is `timeout_s` or `default`.
pub(crate) fn deadline(timeout_s: Option<u32>, default: u32) -> Duration {
    Duration::from_secs(timeout_s.unwrap_or(default).into()) + MARGIN
}

/// The client-side deadline of a command that runs for `timeout_s` or `default` seconds.
fn command_deadline(timeout_s: Option<u32>, default: u32) -> Duration {
    deadline(timeout_s, default) + COMMAND_SLACK
}

pub(crate) fn container_path(agent: &str, container: &str) -> String {
    format!(
        "/api/v1/agents/{}/containers/{}",
        enc(agent),
        enc(container)
    )
}

const NO_BODY: Option<&()> = None;

impl Client {
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        self.call(Method::GET, path, NO_BODY, timeout).await
    }

    /// `GET /api/v1/agents`: every agent the server knows.
    pub async fn agents(&self) -> Result<Vec<AgentInfo>, ClientError> {
        self.get("/api/v1/agents", DEFAULT_TIMEOUT).await
    }

    /// `GET /api/v1/agents/{agent}`.
    pub async fn agent(&self, agent: &str) -> Result<AgentInfo, ClientError> {
        self.get(&format!("/api/v1/agents/{}", enc(agent)), DEFAULT_TIMEOUT)
            .await
    }

    /// `GET /api/v1/agents/{agent}/ping`: asks the agent over MQTT.
    pub async fn ping(
        &self,
        agent: &str,
        timeout_s: Option<u32>,
    ) -> Result<AgentPing, ClientError> {
        let q = query(&[("timeout_s", timeout_s.map(|t| t.to_string()))]);
        let path = format!("/api/v1/agents/{}/ping{q}", enc(agent));
        self.get(&path, deadline(timeout_s, READ_TIMEOUT_S)).await
    }

    /// `POST /api/v1/agents` (admin): registers an agent and returns its enrollment token.
    pub async fn register_agent(&self, new: &NewAgent) -> Result<Enrollment, ClientError> {
        self.call(Method::POST, "/api/v1/agents", Some(new), DEFAULT_TIMEOUT)
            .await
    }

    /// `DELETE /api/v1/agents/{agent}` (admin): its credentials stop working.
    pub async fn remove_agent(&self, agent: &str) -> Result<TokenInfoName, ClientError> {
        let path = format!("/api/v1/agents/{}", enc(agent));
        self.call(Method::DELETE, &path, NO_BODY, DEFAULT_TIMEOUT)
            .await
    }

    /// `GET /api/v1/agents/{agent}/containers`: cached unless `live`.
    pub async fn containers(
        &self,
        agent: &str,
        o: &ListOptions,
    ) -> Result<ContainerListing, ClientError> {
        let q = query(&[
            ("live", o.live.then(|| "true".to_owned())),
            ("all", o.all.map(|a| a.to_string())),
            ("timeout_s", o.timeout_s.map(|t| t.to_string())),
        ]);
        let path = format!("/api/v1/agents/{}/containers{q}", enc(agent));
        self.get(&path, deadline(o.timeout_s, READ_TIMEOUT_S)).await
    }

    /// `GET /api/v1/containers`: the fleet's containers whose name contains `name` (or equals
    /// it, with `exact`); every container when `name` is `None`.
    pub async fn search(
        &self,
        name: Option<&str>,
        exact: bool,
    ) -> Result<Vec<FleetContainer>, ClientError> {
        let q = query(&[
            ("name", name.map(str::to_owned)),
            ("exact", exact.then(|| "true".to_owned())),
        ]);
        self.get(&format!("/api/v1/containers{q}"), DEFAULT_TIMEOUT)
            .await
    }

    /// The agents that hold `container`: by exact name, else, when it could be an ID prefix
    /// (`ContainerRef::could_be_id`), by ID prefix. Sorted, each once.
    pub async fn locate(&self, container: &str) -> Result<Vec<String>, ClientError> {
        let mut agents: Vec<String> = self
            .search(Some(container), true)
            .await?
            .into_iter()
            .map(|r| r.agent)
            .collect();
        let maybe_id = ContainerRef::new(container).is_ok_and(|c| c.could_be_id());
        if agents.is_empty() && maybe_id {
            agents = self
                .search(None, false)
                .await?
                .into_iter()
                .filter(|r| r.container.id.starts_with(container))
                .map(|r| r.agent)
                .collect();
        }
        agents.sort();
        agents.dedup();
        Ok(agents)
    }

    /// `GET /api/v1/agents/{agent}/containers/{container}`: asks the agent.
    pub async fn inspect(
        &self,
        agent: &str,
        container: &str,
        timeout_s: Option<u32>,
    ) -> Result<ContainerDetail, ClientError> {
        let q = query(&[("timeout_s", timeout_s.map(|t| t.to_string()))]);
        let path = format!("{}{q}", container_path(agent, container));
        self.get(&path, deadline(timeout_s, READ_TIMEOUT_S)).await
    }

    /// `POST /api/v1/agents/{agent}/containers/{container}/{action}`.
    pub async fn act(
        &self,
        agent: &str,
        container: &str,
        action: Action,
        o: &ActionOptions,
    ) -> Result<ActionResult, ClientError> {
        let q = query(&[
            ("grace_s", o.grace_s.map(|g| g.to_string())),
            ("signal", o.signal.clone()),
            ("timeout_s", o.timeout_s.map(|t| t.to_string())),
        ]);
        let path = format!(
            "{}/{}{q}",
            container_path(agent, container),
            action.as_str()
        );
        let timeout = deadline(o.timeout_s, ACTION_TIMEOUT_S);
        self.call(Method::POST, &path, NO_BODY, timeout).await
    }

    /// `GET …/logs`: the last lines of a container's output.
    pub async fn logs(
        &self,
        agent: &str,
        container: &str,
        o: &LogsOptions,
    ) -> Result<Logs, ClientError> {
        let q = query(&[
            ("tail", o.tail.map(|t| t.to_string())),
            ("since", o.since.clone()),
            ("timestamps", o.timestamps.then(|| "true".to_owned())),
            ("timeout_s", o.timeout_s.map(|t| t.to_string())),
        ]);
        let path = format!("{}/logs{q}", container_path(agent, container));
        self.get(&path, deadline(o.timeout_s, READ_TIMEOUT_S)).await
    }

    /// `POST …/exec`: runs one command in the container and waits for it (its own deadline,
    /// `timeout_s`, plus the server's slack).
    pub async fn exec(
        &self,
        agent: &str,
        container: &str,
        req: &ExecRequest,
    ) -> Result<CommandResult, ClientError> {
        let path = format!("{}/exec", container_path(agent, container));
        let timeout = command_deadline(req.timeout_s, ops::DEFAULT_EXEC_TIMEOUT_S);
        self.call(Method::POST, &path, Some(req), timeout).await
    }

    /// `GET /api/v1/agents/{agent}/stats`, or one container's: what `docker stats --no-stream`
    /// shows.
    pub async fn stats(&self, agent: &str, container: Option<&str>) -> Result<Stats, ClientError> {
        let path = match container {
            Some(c) => format!("{}/stats", container_path(agent, c)),
            None => format!("/api/v1/agents/{}/stats", enc(agent)),
        };
        self.get(&path, deadline(None, READ_TIMEOUT_S)).await
    }

    /// `GET /api/v1/container-actions`: the table of container actions.
    pub async fn container_actions(&self) -> Result<Vec<ActionInfo>, ClientError> {
        self.get("/api/v1/container-actions", DEFAULT_TIMEOUT).await
    }

    /// `GET /api/v1/actions` (every agent's) or `GET /api/v1/agents/{agent}/actions`: the
    /// operator-defined actions.
    pub async fn defined_actions(&self, agent: Option<&str>) -> Result<ActionListing, ClientError> {
        let path = match agent {
            Some(a) => format!("/api/v1/agents/{}/actions", enc(a)),
            None => "/api/v1/actions".to_owned(),
        };
        self.get(&path, DEFAULT_TIMEOUT).await
    }

    /// `POST /api/v1/agents/{agent}/actions/{action}`: runs it and waits (its deadline,
    /// `timeout_s` or `default_s`, the action's own, plus the server's slack).
    pub async fn run_action(
        &self,
        agent: &str,
        action: &str,
        req: &RunActionRequest,
        default_s: u32,
    ) -> Result<CommandResult, ClientError> {
        let path = format!("/api/v1/agents/{}/actions/{}", enc(agent), enc(action));
        let timeout = command_deadline(req.timeout_s, default_s);
        self.call(Method::POST, &path, Some(req), timeout).await
    }

    /// `GET /api/v1/whoami`.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.get("/api/v1/whoami", DEFAULT_TIMEOUT).await
    }

    /// `GET /api/v1/tokens` (admin).
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.get("/api/v1/tokens", DEFAULT_TIMEOUT).await
    }

    /// `POST /api/v1/tokens` (admin): the secret is in the answer, this once.
    pub async fn create_token(&self, new: &NewToken) -> Result<CreatedToken, ClientError> {
        self.call(Method::POST, "/api/v1/tokens", Some(new), DEFAULT_TIMEOUT)
            .await
    }

    /// `DELETE /api/v1/tokens/{name}` (admin).
    pub async fn revoke_token(&self, name: &str) -> Result<TokenInfoName, ClientError> {
        let path = format!("/api/v1/tokens/{}", enc(name));
        self.call(Method::DELETE, &path, NO_BODY, DEFAULT_TIMEOUT)
            .await
    }

    /// `GET /api/v1/audit` (admin): newest first.
    pub async fn audit(&self, limit: Option<u32>) -> Result<Vec<AuditRecord>, ClientError> {
        let q = query(&[("limit", limit.map(|l| l.to_string()))]);
        self.get(&format!("/api/v1/audit{q}"), DEFAULT_TIMEOUT)
            .await
    }

    /// `POST /api/v1/enroll`: needs no token; the enrollment token is the credential.
    pub async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, ClientError> {
        self.call(Method::POST, "/api/v1/enroll", Some(req), DEFAULT_TIMEOUT)
            .await
    }

    /// `POST /api/v1/mqtt-users` (admin): the password is in the answer, this once.
    pub async fn create_mqtt_user(&self, new: &NewMqttUser) -> Result<MqttUser, ClientError> {
        self.call(
            Method::POST,
            "/api/v1/mqtt-users",
            Some(new),
            DEFAULT_TIMEOUT,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_leave_out_what_is_unset() {
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(
            query(&[
                ("a", Some("1".into())),
                ("b", None),
                ("c", Some("x y".into()))
            ]),
            "?a=1&c=x%20y"
        );
    }

    #[test]
    fn deadlines_exceed_the_servers() {
        assert_eq!(deadline(None, ACTION_TIMEOUT_S), Duration::from_secs(35));
        assert_eq!(deadline(Some(2), READ_TIMEOUT_S), Duration::from_secs(7));
    }
}
