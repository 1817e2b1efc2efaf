//! The container actions, in one table: each action's name, the op that carries it, its one-line
//! summary, its parameter and whether it stops a container. The agent's handlers, the API's action
//! route, the CLI's verbs, the dashboard (`GET /api/v1/container-actions`) and Home Assistant's commands
//! are all driven by [`ACTIONS`]; an [`ActionRequest`] is how any of them asks for one.

use serde::{Deserialize, Serialize};

use crate::ops::{
    parse_args, ContainerArgs, ContainerKill, ContainerPause, ContainerRestart, ContainerStart,
    ContainerStop, ContainerUnpause, KillArgs, Op, StopArgs,
};
use crate::{ContainerRef, ContainerState, ErrorBody};

/// A container action.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "lowercase")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Start,
    Stop,
    Restart,
    Kill,
    Pause,
    Unpause,
}

/// What an action takes besides the container.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "lowercase")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Param {
    None,
    /// `grace_s`: seconds between SIGTERM and SIGKILL.
    Grace,
    /// `signal`: a signal name or number.
    Signal,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSpec {
    pub action: Action,
    /// The op on the wire (`zedops/v1/agents/<a>/req/<op>`).
    pub op: &'static str,
    /// One line for help texts and buttons.
    pub summary: &'static str,
    pub param: Param,
    /// Whether it can stop a container: Home Assistant refuses these for the agent's own
    /// container.
    pub stops: bool,
    /// The states it is offered in (the dashboard's buttons); others answer `changed: false`
    /// or a conflict.
    pub applies_to: &'static [ContainerState],
    /// Whether the dashboard asks before it sends it (it cannot be undone gracefully).
    pub danger: bool,
}

use ContainerState::{Created, Exited, Paused, Restarting, Running};

/// Every container action, in the order the dashboard shows them. Each needs the operator role
/// and changes state.
pub const ACTIONS: [ActionSpec; 6] = [
    ActionSpec {
        action: Action::Start,
        op: ContainerStart::NAME,
        summary: "Start one or more stopped containers",
        param: Param::None,
        stops: false,
        applies_to: &[Exited, Created],
        danger: false,
    },
    ActionSpec {
        action: Action::Stop,
        op: ContainerStop::NAME,
        summary: "Stop one or more containers (SIGTERM, then SIGKILL after the grace period)",
        param: Param::Grace,
        stops: true,
        applies_to: &[Running, Restarting, Paused],
        danger: false,
    },
    ActionSpec {
        action: Action::Restart,
        op: ContainerRestart::NAME,
        summary: "Restart one or more containers",
        param: Param::Grace,
        stops: true,
        applies_to: &[Running],
        danger: false,
    },
    ActionSpec {
        action: Action::Pause,
        op: ContainerPause::NAME,
        summary: "Pause every process of one or more containers",
        param: Param::None,
        stops: true,
        applies_to: &[Running],
        danger: false,
    },
    ActionSpec {
        action: Action::Unpause,
        op: ContainerUnpause::NAME,
        summary: "Resume one or more paused containers",
        param: Param::None,
        stops: false,
        applies_to: &[Paused],
        danger: false,
    },
    ActionSpec {
        action: Action::Kill,
        op: ContainerKill::NAME,
        summary: "Send a signal to the main process of one or more containers (default SIGKILL)",
        param: Param::Signal,
        stops: true,
        applies_to: &[Running, Restarting],
        danger: true,
    },
];

impl Action {
    /// In the order of [`ACTIONS`].
    pub const ALL: [Action; 6] = [
        Self::Start,
        Self::Stop,
        Self::Restart,
        Self::Pause,
        Self::Unpause,
        Self::Kill,
    ];

    /// Its row of [`ACTIONS`].
    pub fn spec(self) -> &'static ActionSpec {
        let i = Self::ALL.iter().position(|a| *a == self).unwrap_or(0);
        &ACTIONS[i]
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Unpause => "unpause",
        }
    }

    /// The op that carries this action.
    pub fn op_name(self) -> &'static str {
        self.spec().op
    }

    /// The action an op carries, if it is one.
    pub fn of_op(op: &str) -> Option<Self> {
        ACTIONS.iter().find(|s| s.op == op).map(|s| s.action)
    }

    pub fn parse(s: &str) -> Result<Self, ErrorBody> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|a| a.as_str()).collect();
                ErrorBody::bad_request(format!(
                    "unknown action {s:?}: use one of {}",
                    names.join(", ")
                ))
            })
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether op `name` changes state (a container action, or `container.exec`) rather than reads
/// it. Agents run these in request slots of their own, so they never wait behind reads.
pub fn changes_state(name: &str) -> bool {
    use crate::ops::{ActionRun, ContainerExec, Op};
    Action::of_op(name).is_some() || name == ContainerExec::NAME || name == ActionRun::NAME
}

/// An action on one container, with its parameter: what the API, the CLI and Home Assistant ask
/// for, and what the agent's handlers receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRequest {
    pub action: Action,
    pub container: ContainerRef,
    /// For `stop` and `restart`.
    pub grace_s: Option<u32>,
    /// For `kill`.
    pub signal: Option<String>,
}

impl ActionRequest {
    pub fn new(action: Action, container: ContainerRef) -> Self {
        Self {
            action,
            container,
            grace_s: None,
            signal: None,
        }
    }

    fn stop_args(&self) -> StopArgs {
        StopArgs {
            container: self.container.clone(),
            grace_s: self.grace_s,
        }
    }

    fn kill_args(&self) -> KillArgs {
        KillArgs {
            container: self.container.clone(),
            signal: self.signal.clone(),
        }
    }

    /// The grace period (default 10 s), checked.
    pub fn grace(&self) -> Result<u32, ErrorBody> {
        self.stop_args().grace()
    }

    /// The signal (default `SIGKILL`), checked.
    pub fn signal(&self) -> Result<String, ErrorBody> {
        self.kill_args().signal()
    }

    /// Checks the parameters: the grace period when given, the signal of `kill`.
    pub fn check(&self) -> Result<(), ErrorBody> {
        self.grace()?;
        if self.action.spec().param == Param::Signal {
            self.signal()?;
        }
        Ok(())
    }

    /// Checks the parameters and encodes the op's arguments (`docs/protocol.md` § Ops).
    pub fn to_payload(&self) -> Result<Vec<u8>, ErrorBody> {
        self.check()?;
        let encoded = match self.action.spec().param {
            Param::None => serde_json::to_vec(&ContainerArgs {
                container: self.container.clone(),
            }),
            Param::Grace => serde_json::to_vec(&self.stop_args()),
            Param::Signal => serde_json::to_vec(&self.kill_args()),
        };
        encoded.map_err(|e| ErrorBody::internal(format!("cannot encode the request: {e}")))
    }

    /// Decodes the arguments of `action`'s op.
    pub fn from_payload(action: Action, payload: &[u8]) -> Result<Self, ErrorBody> {
        Ok(match action.spec().param {
            Param::None => {
                // Every op without a parameter takes `ContainerArgs`.
                let a = parse_args::<ContainerStart>(payload)?;
                Self::new(action, a.container)
            }
            Param::Grace => {
                let a = parse_args::<ContainerStop>(payload)?;
                Self::new(action, a.container).with_grace(a.grace_s)
            }
            Param::Signal => {
                let a = parse_args::<ContainerKill>(payload)?;
                let mut r = Self::new(action, a.container);
                r.signal = a.signal;
                r
            }
        })
    }

    pub fn with_grace(mut self, grace_s: Option<u32>) -> Self {
        self.grace_s = grace_s;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn the_table_and_the_enum_agree() {
        for (a, spec) in Action::ALL.iter().zip(ACTIONS.iter()) {
            assert_eq!(*a, spec.action);
            assert_eq!(a.spec(), spec);
            assert_eq!(Action::parse(a.as_str()).unwrap(), *a);
            assert_eq!(Action::of_op(spec.op), Some(*a));
            assert!(crate::ops::ALL.contains(&spec.op) && changes_state(spec.op));
        }
        assert!(!changes_state("container.logs"));
        assert_eq!(
            Action::parse("explode").unwrap_err().code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn requests_round_trip_through_their_ops_arguments() {
        let c = ContainerRef::new("web-1").unwrap();
        for a in Action::ALL {
            let mut r = ActionRequest::new(a, c.clone());
            match a.spec().param {
                Param::Grace => r.grace_s = Some(3),
                Param::Signal => r.signal = Some("HUP".into()),
                Param::None => {}
            }
            let back = ActionRequest::from_payload(a, &r.to_payload().unwrap()).unwrap();
            assert_eq!(back, r, "{a}");
        }
        let mut bad = ActionRequest::new(Action::Kill, c.clone());
        bad.signal = Some("NOPE!".into());
        assert_eq!(bad.to_payload().unwrap_err().code, ErrorCode::BadRequest);
        let long = ActionRequest::new(Action::Stop, c).with_grace(Some(301));
        assert_eq!(long.to_payload().unwrap_err().code, ErrorCode::BadRequest);
    }
}
