//! The names of the per-container topics this agent left retained, kept in its state directory
//! (`retained-containers.json`), so that a later run can clear the topics of containers that
//! were removed while it was not running.
//!
//! The agent does not read its per-container topics back from the broker for that: a
//! subscription to them makes rumqttd 0.20 scan every retained message of the fleet, once per
//! agent, which is what kept the embedded broker from carrying 5000 agents (docs/benchmarks.md
//! §6). Without a state directory (or with an unreadable file) nothing is cleared across
//! restarts; the snapshot topic, which is the whole list, is always right.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

/// Bound on what is read back: far more names than one Docker host has containers.
const MAX_NAMES: usize = 100_000;
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct File {
    agent: String,
    containers: BTreeSet<String>,
}

/// The record of one agent in one state directory.
#[derive(Debug, Clone)]
pub struct Record {
    path: PathBuf,
    agent: String,
}

impl Record {
    pub fn new(state_dir: &Path, agent: &str) -> Self {
        Self {
            path: state_dir.join("retained-containers.json"),
            agent: agent.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names recorded by an earlier run of this agent; empty when there is no record, it is
    /// another agent's, or it cannot be read (then with a warning).
    pub fn load(&self) -> BTreeSet<String> {
        let read = || -> Result<Option<File>, String> {
            let meta = match std::fs::metadata(&self.path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            if meta.len() > MAX_FILE_BYTES {
                return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
            }
            let bytes = std::fs::read(&self.path).map_err(|e| e.to_string())?;
            let f: File = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if f.containers.len() > MAX_NAMES {
                return Err(format!("more than {MAX_NAMES} names"));
            }
            Ok(Some(f))
        };
        match read() {
            Ok(Some(f)) if f.agent == self.agent => f.containers,
            Ok(Some(f)) => {
                debug!(path = %self.path.display(), other = %f.agent, "record of another agent; ignored");
                BTreeSet::new()
            }
            Ok(None) => BTreeSet::new(),
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot read the record of retained container topics; topics of containers removed while the agent was stopped stay retained");
                BTreeSet::new()
            }
        }
    }

    /// Replaces the record (written to a temporary file, then renamed over it).
    pub fn save(&self, names: BTreeSet<String>) -> Result<(), SaveError> {
        let f = File {
            agent: self.agent.clone(),
            containers: names,
        };
        let fail = |what, path: &Path| {
            let path = path.to_owned();
            move |source| SaveError { what, path, source }
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(fail("creating", dir))?;
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&f).map_err(std::io::Error::other);
        let bytes = bytes.map_err(fail("encoding", &tmp))?;
        std::fs::write(&tmp, bytes).map_err(fail("writing", &tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(fail("renaming to", &self.path))
    }
}

/// Why the record could not be written: the step, its file, and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct SaveError {
    what: &'static str,
    path: std::path::PathBuf,
    #[source]
    source: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_other_agents_and_damage() {
        let dir = std::env::temp_dir().join(format!("zedops-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let r = Record::new(&dir, "a1");
        assert!(r.load().is_empty(), "no file yet");
        let names: BTreeSet<String> = ["web".to_owned(), "db".to_owned()].into();
        r.save(names.clone()).unwrap();
        assert_eq!(r.load(), names);
        assert!(
            Record::new(&dir, "a2").load().is_empty(),
            "another agent's record is not used"
        );
        std::fs::write(r.path(), b"{not json").unwrap();
        assert!(r.load().is_empty(), "a damaged file reads as empty");
        r.save(BTreeSet::new()).unwrap();
        assert!(r.load().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
