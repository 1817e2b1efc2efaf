//! Actions: start, stop, restart, kill, pause, unpause. Each says whether it changed anything.

use super::*;

/// What [`Driver::moment`] reads.
struct Moment {
    state: ContainerState,
    started_at: Option<String>,
    finished_at: Option<String>,
}

impl Driver {
    pub async fn start(&self, t: &Resolved) -> Result<bool, DriverError> {
        let before = self.moment(&t.id).await?;
        if matches!(
            before.state,
            ContainerState::Running | ContainerState::Restarting
        ) {
            return Ok(false);
        }
        if before.state == ContainerState::Paused {
            return Err(DriverError::Conflict(format!(
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

    pub async fn stop(&self, t: &Resolved, grace: u32) -> Result<bool, DriverError> {
        let before = self.moment(&t.id).await?;
        if !before.state.is_active() {
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
    /// and bollard 0.21 returns 304 as `Ok` (bollard's `src/docker.rs`:
    /// `s.is_success() || s == NOT_MODIFIED`), so the answer alone cannot say (and a reference
    /// resolved a moment ago may be stale).
    async fn moment(&self, id: &str) -> Result<Moment, DriverError> {
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
            state: state_of(state.status.as_ref()),
            started_at: state.started_at,
            finished_at: state.finished_at,
        })
    }

    pub async fn restart(&self, t: &Resolved, grace: u32) -> Result<bool, DriverError> {
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

    pub async fn kill(&self, t: &Resolved, signal: &str) -> Result<bool, DriverError> {
        if !t.state.is_active() {
            return Err(DriverError::Conflict(format!(
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

    pub async fn pause(&self, t: &Resolved) -> Result<bool, DriverError> {
        match t.state {
            ContainerState::Paused => return Ok(false),
            ContainerState::Running => {}
            other => {
                return Err(DriverError::Conflict(format!(
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

    pub async fn unpause(&self, t: &Resolved) -> Result<bool, DriverError> {
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
}
