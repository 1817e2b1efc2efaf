//! The agent's own container, when it runs in one: Home Assistant may not stop it.

use super::*;

/// The agent's own container, best effort: an agent must not let Home Assistant stop the
/// container it runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnContainer {
    /// Container ID prefixes (≥ 12 hex digits; full IDs from cgroup/mountinfo, the short ID from
    /// the host name).
    id_prefixes: Vec<String>,
    /// Configured name or ID prefix.
    configured: Option<String>,
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// 64-hex tokens of a path (`/docker/<id>`, `/system.slice/docker-<id>.scope`, …).
fn full_ids(path: &str) -> impl Iterator<Item = &str> {
    path.split(['/', '-', '.', ':'])
        .filter(|t| t.len() == 64 && is_hex(t))
}

impl OwnContainer {
    /// Detects from this process's `/proc/self/cgroup`, `/proc/self/mountinfo` and host name.
    pub fn detect(configured: Option<&str>) -> Self {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let hostname = std::env::var("HOSTNAME").ok().or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        });
        let mut own = Self::from_sources(&cgroup, &mountinfo, hostname.as_deref());
        own.configured = configured
            .map(|s| s.trim().trim_start_matches('/').to_owned())
            .filter(|s| !s.is_empty());
        own
    }

    /// Pure detection, for tests:
    /// - cgroup (v1, or v2 with the systemd driver): a 64-hex path component;
    /// - mountinfo: Docker bind-mounts `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` from
    ///   `…/containers/<id>/…` into every container (other lines are ignored: on a host,
    ///   mountinfo lists every container's mounts);
    /// - host name: Docker's default is the 12-hex short ID.
    pub fn from_sources(cgroup: &str, mountinfo: &str, hostname: Option<&str>) -> Self {
        let mut ids: Vec<String> = Vec::new();
        for line in cgroup.lines() {
            let path = line.splitn(3, ':').nth(2).unwrap_or_default();
            ids.extend(full_ids(path).map(str::to_owned));
        }
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(root), Some(point)) = (fields.get(3), fields.get(4)) else {
                continue;
            };
            if matches!(*point, "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf") {
                let parts: Vec<&str> = root.split('/').collect();
                for w in parts.windows(2) {
                    if w[0] == "containers" && w[1].len() == 64 && is_hex(w[1]) {
                        ids.push(w[1].to_owned());
                    }
                }
            }
        }
        if let Some(h) = hostname.map(str::trim) {
            if h.len() == 12 && is_hex(h) {
                ids.push(h.to_owned());
            }
        }
        ids.sort();
        ids.dedup();
        Self {
            id_prefixes: ids,
            configured: None,
        }
    }

    pub fn matches(&self, c: &Container) -> bool {
        self.id_prefixes
            .iter()
            .any(|p| c.id.starts_with(p.as_str()))
            || self
                .configured
                .as_deref()
                .is_some_and(|s| c.name == s || (s.len() >= 12 && is_hex(s) && c.id.starts_with(s)))
    }

    pub fn is_known(&self) -> bool {
        !self.id_prefixes.is_empty() || self.configured.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::tests::container;

    #[test]
    fn own_container_detection() {
        let id = "4f1d2c3b".repeat(8);
        let me = container("zedops", &id);
        let other = container("web-1", &"a".repeat(64));

        // cgroup v1
        let v1 = format!("12:memory:/docker/{id}\n11:cpu:/docker/{id}\n");
        let own = OwnContainer::from_sources(&v1, "", None);
        assert!(own.matches(&me) && !own.matches(&other));
        // cgroup v2, systemd driver
        let v2 = format!("0::/system.slice/docker-{id}.scope\n");
        assert!(OwnContainer::from_sources(&v2, "", None).matches(&me));
        // cgroup v2 with a private namespace: mountinfo
        let mi = format!(
            "1 0 8:1 / / rw - overlay overlay rw\n\
             2 1 8:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
        );
        let own = OwnContainer::from_sources("0::/\n", &mi, Some("myhost"));
        assert!(own.matches(&me) && !own.matches(&other));
        // On a host, mountinfo lists other containers' mounts: they are not us.
        let host = format!(
            "3 1 0:5 / /var/lib/docker/containers/{id}/mounts/shm rw - tmpfs shm rw\n\
             4 1 0:6 / /var/lib/docker/overlay2/{id}/merged rw - overlay overlay rw\n"
        );
        let own = OwnContainer::from_sources("0::/user.slice/user-1000.slice\n", &host, Some("vm"));
        assert!(!own.is_known() && !own.matches(&me));
        // HOSTNAME = short ID
        let own = OwnContainer::from_sources("0::/\n", "", Some(&id[..12]));
        assert!(own.matches(&me) && !own.matches(&other));
        // Configured by name.
        let own = OwnContainer {
            configured: Some("zedops".into()),
            ..Default::default()
        };
        assert!(own.matches(&me) && !own.matches(&other));
    }
}
