//! Host actions: an argv run by the agent itself (never through a shell), in a process group of
//! its own so that the deadline kills everything it started, with bounded output.
//!
//! The command does not inherit the agent's environment (which may hold its MQTT password or an
//! enrollment token): only `PATH`, `HOME`, `LANG`, `LC_ALL`, `TZ` and `USER` pass, plus the
//! action's own `env`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use zedops_proto::ops::CommandResult;

use crate::capture::{elapsed_ms, Capture};

/// Variables of the agent's environment a host action sees.
const PASSED_ENV: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER"];
/// How long output is still read after the deadline's kill (a grandchild that left the group
/// may hold the pipes open).
const DRAIN: Duration = Duration::from_secs(1);

/// Runs `argv` on the host; a command that cannot be started answers exit code 127 with the
/// reason in stderr, as a shell would.
pub async fn run_host(
    argv: &[String],
    workdir: Option<&str>,
    env: &[String],
    deadline: Duration,
    max_bytes: usize,
) -> CommandResult {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(
            PASSED_ENV
                .iter()
                .filter_map(|k| Some((k, std::env::var_os(k)?))),
        )
        .envs(env.iter().filter_map(|e| e.split_once('=')))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = workdir {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CommandResult {
                exit_code: Some(127),
                stdout: String::new(),
                stderr: format!("zedops: cannot run {}: {e}\n", argv[0]),
                truncated: false,
                timed_out: false,
                duration_ms: elapsed_ms(started),
            }
        }
    };
    // Kills the whole group whenever this run ends early: at the deadline, or when the request
    // is dropped (the agent stopping).
    let mut group = child.id().map(Group);
    let (mut out, mut err) = (Capture::new(max_bytes), Capture::new(max_bytes));
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (status, timed_out) = {
        let reading = async {
            tokio::join!(drain(stdout, &mut out), drain(stderr, &mut err));
            child.wait().await.ok()
        };
        tokio::pin!(reading);
        match tokio::time::timeout(deadline, &mut reading).await {
            Ok(status) => (status, false),
            Err(_) => {
                if let Some(g) = &group {
                    g.kill();
                }
                let drained = tokio::time::timeout(DRAIN, &mut reading).await;
                (drained.ok().flatten(), true)
            }
        }
    };
    if !timed_out {
        // It ended by itself: its group is gone, and its number may soon be someone else's.
        group = None;
    }
    drop(group);
    CommandResult {
        exit_code: if timed_out {
            None
        } else {
            status.and_then(exit_code)
        },
        stdout: out.text(),
        stderr: err.text(),
        truncated: out.truncated || err.truncated,
        timed_out,
        duration_ms: elapsed_ms(started),
    }
}

async fn drain(pipe: Option<impl AsyncRead + Unpin>, into: &mut Capture) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        into.push(&buf[..n]);
    }
}

/// The process group a command leads (its PID): SIGKILL to all of it on [`Group::kill`] and on
/// drop.
struct Group(u32);

impl Group {
    fn kill(&self) {
        let Ok(pgid) = i32::try_from(self.0) else {
            return;
        };
        // ESRCH (already gone) is fine.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The exit code as a shell reports it: the code, or 128 + the signal that killed it.
fn exit_code(s: std::process::ExitStatus) -> Option<i64> {
    use std::os::unix::process::ExitStatusExt;
    s.code()
        .or_else(|| s.signal().map(|sig| 128 + sig))
        .map(i64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn a_signal_is_128_plus_its_number() {
        let r = run_host(
            &argv(&["sh", "-c", "kill -TERM $$"]),
            None,
            &[],
            Duration::from_secs(5),
            64,
        )
        .await;
        assert_eq!(r.exit_code, Some(128 + 15), "{r:?}");
    }

    #[tokio::test]
    async fn runs_without_a_shell_and_bounds_output() {
        let r = run_host(
            &argv(&["echo", "; rm -rf /", "$(id)"]),
            None,
            &[],
            Duration::from_secs(5),
            1024,
        )
        .await;
        assert_eq!(r.exit_code, Some(0));
        assert_eq!(r.stdout, "; rm -rf / $(id)\n");
        let r = run_host(
            &argv(&["sh", "-c", "yes | head -c 100000; exit 3"]),
            None,
            &[],
            Duration::from_secs(5),
            10,
        )
        .await;
        assert_eq!(
            (r.exit_code, r.stdout.len(), r.truncated),
            (Some(3), 10, true)
        );
    }

    #[tokio::test]
    async fn the_deadline_kills_the_whole_group() {
        let r = run_host(
            &argv(&["sh", "-c", "sleep 3600 & sleep 3600"]),
            None,
            &[],
            Duration::from_millis(300),
            1024,
        )
        .await;
        assert!(r.timed_out && r.exit_code.is_none(), "{r:?}");
        assert!(r.duration_ms < 3000, "{r:?}");
    }

    #[tokio::test]
    async fn the_agents_environment_does_not_pass_and_missing_programs_are_127() {
        // cargo sets CARGO_MANIFEST_DIR for the test process: like any agent variable, it stays.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let r = run_host(
            &argv(&["env"]),
            None,
            &["A=b".into()],
            Duration::from_secs(5),
            65536,
        )
        .await;
        assert!(
            !r.stdout.contains("CARGO_MANIFEST_DIR") && r.stdout.contains("A=b"),
            "{}",
            r.stdout
        );
        let r = run_host(
            &argv(&["/nonexistent/x"]),
            None,
            &[],
            Duration::from_secs(5),
            1024,
        )
        .await;
        assert_eq!(r.exit_code, Some(127));
        assert!(r.stderr.contains("cannot run"));
    }
}
