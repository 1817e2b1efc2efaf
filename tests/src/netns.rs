//! "Another host" on this machine: a network namespace joined to this one by a veth pair, so a
//! process in it has an address of its own and reaches this host only at the pair's address —
//! not at 127.0.0.1 (issue 17). Needs root and iproute2's `ip`. Removed on drop.

use std::process::Command;

use anyhow::{bail, Context};

/// A namespace `name` with `10.213.N.2/30`, reaching this host at `10.213.N.1` (`host_ip`).
pub struct OtherHost {
    pub name: String,
    /// This host's address as the namespace sees it.
    pub host_ip: String,
    /// The namespace's own address.
    pub ip: String,
    veth: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {args:?}: {} (the namespace tests need root and iproute2)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl OtherHost {
    /// A fresh namespace; `n` (1-250) picks its /30, unique per test and process.
    pub fn new(n: u8) -> anyhow::Result<Self> {
        let id = format!("{}{n}", std::process::id() % 10_000);
        let name = format!("zd{id}");
        let (veth, peer) = (format!("zd{id}h"), format!("zd{id}n"));
        let sub = n.clamp(1, 250);
        let (host_ip, ns_ip) = (format!("10.213.{sub}.1"), format!("10.213.{sub}.2"));
        // Leftovers of a killed run with the same numbers (a 10.213.N.1 on another veth would
        // make this one's route ambiguous).
        let _ = ip(&["link", "del", &veth]);
        let _ = ip(&["netns", "del", &name]);
        for stale in stale_with_address(&host_ip) {
            let _ = ip(&["link", "del", &stale]);
        }
        ip(&["netns", "add", &name])?;
        let me = Self {
            name: name.clone(),
            host_ip: host_ip.clone(),
            ip: ns_ip.clone(),
            veth: veth.clone(),
        };
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &veth])?;
        ip(&["link", "set", &veth, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{ns_ip}/30"), "dev", &peer])?;
        inside(&["link", "set", &peer, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(me)
    }

    /// `program args…` to run in the namespace (`ip netns exec NAME program args…`).
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

/// Our veth interfaces (`zd…h`) that carry `addr`.
fn stale_with_address(addr: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!(" {addr}/")))
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|dev| dev.split('@').next().unwrap_or(dev).to_owned())
        .filter(|dev| dev.starts_with("zd") && dev.ends_with('h'))
        .collect()
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.veth]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
