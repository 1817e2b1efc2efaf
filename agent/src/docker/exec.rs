//! `container.exec`: one non-interactive command in a container, with bounded output and a
//! deadline at which it is killed.
//!
//! Docker has no call that kills an exec (moby/moby#9098), so at the deadline the driver kills
//! the process itself by the PID Docker reports, and only when `/proc` shows that PID in this
//! container's cgroup: an agent that does not share the host's PID namespace (in a container of
//! its own without `--pid=host`) cannot, and says so in stderr.

use std::time::{Duration, Instant};

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use zedops_proto::ops::{CommandResult, ExecArgs};

use super::*;
use crate::capture::{elapsed_ms, Capture};

impl Driver {
    /// Runs `a.cmd` in `t`; the output of each stream is bounded to `max_bytes` (the rest is read
    /// and dropped, so the command never blocks on a full pipe).
    pub async fn exec(
        &self,
        t: &Resolved,
        a: &ExecArgs,
        deadline: Duration,
        max_bytes: usize,
    ) -> Result<CommandResult, DriverError> {
        let docker = self.docker()?;
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(false),
            tty: Some(false),
            cmd: Some(a.cmd.clone()),
            env: (!a.env.is_empty()).then(|| a.env.clone()),
            user: a.user.clone(),
            working_dir: a.workdir.clone(),
            ..Default::default()
        };
        let started = Instant::now();
        let created = self
            .call(
                "create an exec",
                CALL_TIMEOUT,
                docker.create_exec(&t.id, config),
            )
            .await?;
        let start = docker.start_exec(&created.id, None::<StartExecOptions>);
        let StartExecResults::Attached { mut output, .. } =
            self.call("start the exec", CALL_TIMEOUT, start).await?
        else {
            return Err(DriverError::Unexpected {
                what: "start the exec".into(),
                agent: self.agent.clone(),
                detail: "Docker started it detached".into(),
            });
        };
        let (mut out, mut err) = (Capture::new(max_bytes), Capture::new(max_bytes));
        let read = async {
            while let Some(item) = output.next().await {
                match item {
                    Ok(bollard::container::LogOutput::StdErr { message }) => err.push(&message),
                    Ok(o) => out.push(&o.into_bytes()),
                    Err(_) => break,
                }
            }
        };
        let timed_out = tokio::time::timeout(deadline, read).await.is_err();
        drop(output);
        let mut stderr = err.text();
        let exit_code = if timed_out {
            let i = self.inspect_exec(&docker, &created.id).await?;
            if !i.pid.is_some_and(|pid| kill_in_container(pid, &t.id)) {
                // Past the output's bound on purpose: the user must see it even after 64 KiB.
                stderr.push_str("\nzedops: the command outlived its deadline and this agent could not kill it (it does not see the container's processes)\n");
            }
            None
        } else {
            self.exec_outcome(&docker, &created.id).await?.exit_code
        };
        Ok(CommandResult {
            exit_code,
            stdout: out.text(),
            stderr,
            truncated: out.truncated || err.truncated,
            timed_out,
            duration_ms: elapsed_ms(started),
        })
    }
}

impl Driver {
    /// The exec's inspect once Docker has recorded its end (the output can end a moment before
    /// the exit code is there): polled for up to a second while it still says running.
    async fn exec_outcome(
        &self,
        docker: &Docker,
        id: &str,
    ) -> Result<bollard::models::ExecInspectResponse, DriverError> {
        let mut i = self.inspect_exec(docker, id).await?;
        for _ in 0..20 {
            if i.running != Some(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            i = self.inspect_exec(docker, id).await?;
        }
        Ok(i)
    }

    async fn inspect_exec(
        &self,
        docker: &Docker,
        id: &str,
    ) -> Result<bollard::models::ExecInspectResponse, DriverError> {
        let call = docker.inspect_exec(id);
        self.call("inspect the exec", CALL_TIMEOUT, call).await
    }
}

/// Sends SIGKILL to host PID `pid` when `/proc/<pid>/cgroup` names container `id`; false when
/// the process is not visible here, belongs to something else, or cannot be signalled.
fn kill_in_container(pid: i64, id: &str) -> bool {
    let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return false;
    };
    if !cgroup.contains(id) {
        return false;
    }
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .is_ok()
}
