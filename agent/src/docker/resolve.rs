//! Container references to containers: one inspect (Docker's own lookup order), falling back to
//! the full list for what it cannot settle (an ambiguous prefix), so the messages stay the same.

use super::*;

/// A resolved container: its full ID, its name and its state when resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub id: String,
    pub name: String,
    pub state: ContainerState,
}

impl Driver {
    /// Resolves a reference: exact name first, then a unique ID prefix (≥ 4 hex digits).
    /// An ambiguous prefix is a `conflict`, never a guess.
    pub async fn resolve(&self, r: &ContainerRef) -> Result<Resolved, DriverError> {
        Ok(self.resolve_inspect(r).await?.0)
    }

    /// Resolves `r` with one inspect call (Docker looks up a full ID, a name, then an ID prefix:
    /// the same order as ours for every reference [`resolve_in`] accepts), and returns the
    /// inspect too when it came from that call. Whatever the inspect cannot settle — not found,
    /// an ambiguous prefix, a prefix shorter than ours — is decided by the full list, so the
    /// answers and messages are exactly those of [`resolve_in`]. One call instead of a full list
    /// keeps an action's cost independent of how many containers the host has.
    pub(super) async fn resolve_inspect(
        &self,
        r: &ContainerRef,
    ) -> Result<(Resolved, Option<ContainerInspectResponse>), DriverError> {
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
            Err(e @ DriverError::Unavailable(_)) => return Err(e),
            Err(_) => {}
        }
        let all = self.list(true).await?;
        Ok((resolve_in(&all, r, &self.agent)?, None))
    }
}

/// Resolution against a container list; pure, so it is unit-tested.
pub fn resolve_in(
    all: &[Container],
    r: &ContainerRef,
    agent: &str,
) -> Result<Resolved, DriverError> {
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
                return Err(DriverError::Conflict(format!(
                    "{r} is ambiguous on agent {agent}: it matches {}; use a longer ID prefix or the name",
                    names.join(", ")
                )));
            }
        }
    }
    Err(DriverError::NotFound(format!(
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
    let state = state_of(ins.state.as_ref().and_then(|s| s.status.as_ref()));
    Some(Resolved { id, name, state })
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
        let r = |s: &str| {
            resolve_in(&all, &ContainerRef::new(s).unwrap(), "m").map_err(ErrorBody::from)
        };
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
}
