//! Docker as the tests observe it: the `docker` CLI, independent of the agent's bollard code.

use std::process::Command;

use anyhow::{bail, Context};

/// The test image built by `scripts/provision.sh` (`FROM scratch` + busybox-static).
pub fn image() -> String {
    std::env::var("ZEDOPS_TEST_IMAGE").unwrap_or_else(|_| "zedops-test-busybox:latest".to_owned())
}

/// Label carried by everything the tests create.
pub const LABEL: &str = "zedops.test";

#[derive(Debug, Clone, Copy, Default)]
pub struct Docker;

impl Docker {
    /// The host's address on Docker's default bridge, as a container sees the server: the
    /// network's IPAM gateway, or — when the engine leaves that empty (Debian's docker.io 20.10
    /// on some hosts lists only the subnet) — the bridge interface's own IPv4 address.
    pub fn bridge_gateway() -> anyhow::Result<String> {
        let inspect = |f: &str| Self::run(&["network", "inspect", "bridge", "-f", f]);
        let gateway = inspect("{{range .IPAM.Config}}{{.Gateway}}{{end}}")?;
        if !gateway.is_empty() {
            return Ok(gateway);
        }
        let name = inspect("{{index .Options \"com.docker.network.bridge.name\"}}")?;
        let name = if name.is_empty() {
            "docker0".to_owned()
        } else {
            name
        };
        let out = Command::new("ip")
            .args(["-4", "-o", "addr", "show", "dev", &name])
            .output()
            .context("running ip addr")?;
        let text = String::from_utf8_lossy(&out.stdout);
        // `5: docker0    inet 172.17.0.1/16 brd … scope global docker0`
        let addr = text
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .map(str::to_owned);
        addr.with_context(|| format!("no IPv4 address on Docker's bridge {name}: {text}"))
    }

    /// Runs `docker ARGS` and returns its trimmed stdout, or an error with stderr.
    pub fn run(args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("docker")
            .args(args)
            .output()
            .with_context(|| format!("running docker {args:?}"))?;
        if !out.status.success() {
            bail!(
                "docker {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub fn inspect(name: &str, format: &str) -> anyhow::Result<String> {
        Self::run(&["inspect", "-f", format, name])
    }

    pub fn state(name: &str) -> anyhow::Result<String> {
        Self::inspect(name, "{{.State.Status}}")
    }

    pub fn started_at(name: &str) -> anyhow::Result<String> {
        Self::inspect(name, "{{.State.StartedAt}}")
    }

    pub fn id(name: &str) -> anyhow::Result<String> {
        Self::inspect(name, "{{.Id}}")
    }

    /// `docker stats --no-stream` CPU % of `name`.
    pub fn cpu_percent(name: &str) -> anyhow::Result<f64> {
        let out = Self::run(&["stats", "--no-stream", "--format", "{{.CPUPerc}}", name])?;
        out.trim()
            .trim_end_matches('%')
            .parse()
            .with_context(|| format!("docker stats said {out:?}"))
    }

    /// Lines of `docker ps -a` for containers with a label, as `name\tstate\timage`.
    pub fn ps_labelled(label: &str) -> anyhow::Result<Vec<String>> {
        let out = Self::run(&[
            "ps",
            "-a",
            "--filter",
            &format!("label={label}"),
            "--format",
            "{{.Names}}\t{{.State}}\t{{.Image}}",
        ])?;
        let mut v: Vec<String> = out
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        Ok(v)
    }
}

/// A container created for a test, removed (forcibly) on drop.
#[derive(Debug)]
pub struct TestContainer {
    pub name: String,
    pub id: String,
    /// A label unique to this container's test (`zedops.test.run=…`).
    pub run_label: String,
}

impl TestContainer {
    /// `docker run -d --init` of the test image, labelled for cleanup. `extra` goes before the image.
    pub fn run(name: &str, run_label: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::make(&["run", "-d"], name, run_label, extra)
    }

    /// `docker run -d --init` of the test image running `sh -c SCRIPT` (busybox) instead of its
    /// ticking loop; `extra` goes before the image.
    pub fn run_script(
        name: &str,
        run_label: &str,
        extra: &[&str],
        script: &str,
    ) -> anyhow::Result<Self> {
        let mut args = extra.to_vec();
        args.extend_from_slice(&["--entrypoint", "/bin/busybox"]);
        Self::make_with(
            &["run", "-d"],
            name,
            run_label,
            &args,
            &["sh", "-c", script],
        )
    }

    /// A container spinning in a shell loop, on at most `cpus` cores when given (`--cpus`: its
    /// share then stays put however busy the machine is).
    pub fn cpu_loop(name: &str, run_label: &str, cpus: Option<&str>) -> anyhow::Result<Self> {
        let limit: Vec<&str> = cpus.map(|c| vec!["--cpus", c]).unwrap_or_default();
        Self::run_script(name, run_label, &limit, "while :; do :; done")
    }

    /// `docker create` only (state `created`).
    pub fn create(name: &str, run_label: &str) -> anyhow::Result<Self> {
        Self::make(&["create"], name, run_label, &[])
    }

    /// `docker <command> --init --network none`, labelled for cleanup, of the test image.
    fn make(command: &[&str], name: &str, run_label: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::make_with(command, name, run_label, extra, &[])
    }

    /// Like [`make`](Self::make), with arguments after the image (`cmd`).
    fn make_with(
        command: &[&str],
        name: &str,
        run_label: &str,
        extra: &[&str],
        cmd: &[&str],
    ) -> anyhow::Result<Self> {
        let label = format!("{LABEL}.run={run_label}");
        let image = image();
        let mut args = command.to_vec();
        args.extend_from_slice(&[
            "--init",
            "--network",
            "none",
            "--label",
            "zedops.test=1",
            "--label",
            &label,
            "--name",
            name,
        ]);
        args.extend_from_slice(extra);
        args.push(&image);
        args.extend_from_slice(cmd);
        let id = Docker::run(&args)?;
        Ok(Self {
            name: name.to_owned(),
            id,
            run_label: label,
        })
    }

    pub fn state(&self) -> anyhow::Result<String> {
        Docker::state(&self.name)
    }

    pub fn started_at(&self) -> anyhow::Result<String> {
        Docker::started_at(&self.name)
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .output();
    }
}
