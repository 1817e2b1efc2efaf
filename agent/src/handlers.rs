//! The op registry: one handler per op, keyed by the op's name. Adding an op (such as an
//! operator-defined action) means registering a handler; the dispatcher does not change.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use zedops_proto::ops::{
    self, ActionResult, ContainerInspect, ContainerKill, ContainerList, ContainerLogs,
    ContainerPause, ContainerRestart, ContainerStart, ContainerStop, ContainerUnpause,
    ContainersList, Op, Ping, Pong,
};
use zedops_proto::{Action, Container, ContainerRef, ErrorBody, Reply};

use crate::docker::Driver;

/// What every handler can use.
pub struct Ctx {
    pub agent: String,
    pub driver: Driver,
    /// Asks the session's main loop to list the containers and publish what changed (see
    /// [`Ctx::published_row`]).
    pub publish: mpsc::Sender<PublishRow>,
}

/// A request to the main loop: list, publish what changed, answer with one container's row as
/// published (`None` when Docker could not be listed or the container is not there).
pub struct PublishRow {
    pub id: String,
    pub reply: oneshot::Sender<Option<Container>>,
}

/// How long an action waits for the main loop to publish its outcome before it answers anyway.
const PUBLISH_WAIT: Duration = Duration::from_secs(2);

impl Ctx {
    /// The container's row after the main loop has listed the containers and published the
    /// snapshot, per-container topic and status that follow from it. An action that changed a
    /// container answers with this row, so its reply reaches the requester after the state it
    /// caused: `zedops restart web-1 && zedops ps` shows web-1 running, not the moment it was
    /// stopped in between. `None` when the main loop is busy past [`PUBLISH_WAIT`], its queue
    /// is full, or Docker could not be listed: the caller fetches the row itself.
    pub async fn published_row(&self, id: &str) -> Option<Container> {
        let (reply, rx) = oneshot::channel();
        self.publish
            .try_send(PublishRow {
                id: id.to_owned(),
                reply,
            })
            .ok()?;
        tokio::time::timeout(PUBLISH_WAIT, rx).await.ok()?.ok()?
    }
}

type BoxReply = Pin<Box<dyn Future<Output = Reply> + Send>>;
type HandlerFn = Arc<dyn Fn(Arc<Ctx>, &[u8]) -> BoxReply + Send + Sync>;

/// Handlers by op name.
#[derive(Clone, Default)]
pub struct Registry {
    map: HashMap<&'static str, HandlerFn>,
}

impl Registry {
    /// Registers the handler of op `O`: it receives decoded arguments and returns the op's output.
    pub fn register<O, F, Fut>(&mut self, f: F)
    where
        O: Op,
        F: Fn(Arc<Ctx>, O::Args) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O::Output, ErrorBody>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.map.insert(
            O::NAME,
            Arc::new(move |ctx, payload| match ops::parse_args::<O>(payload) {
                Ok(args) => {
                    let fut = f(ctx, args);
                    Box::pin(async move { Reply::from_result(fut.await) })
                }
                Err(e) => Box::pin(async move { Reply::failure(e) }),
            }),
        );
    }

    /// The op names served, sorted.
    pub fn ops(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.map.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Runs the handler of `op`; an unknown op is a `bad_request` naming the ops that exist.
    pub async fn dispatch(&self, ctx: Arc<Ctx>, op: &str, payload: &[u8]) -> Reply {
        match self.map.get(op) {
            Some(h) => h(ctx, payload).await,
            None => Reply::failure(ErrorBody::bad_request(format!(
                "unknown op {op:?}: this agent serves {}",
                self.ops().join(", ")
            ))),
        }
    }

    /// Every v1 op (`docs/protocol.md` § Ops).
    pub fn v1() -> Self {
        let mut r = Registry::default();
        r.register::<Ping, _, _>(|ctx, _| async move {
            Ok(Pong {
                agent: ctx.agent.clone(),
                version: zedops_proto::VERSION.to_owned(),
                docker: ctx.driver.status(),
            })
        });
        r.register::<ContainersList, _, _>(|ctx, args| async move {
            Ok(ContainerList {
                containers: ctx.driver.list(args.all).await?,
            })
        });
        r.register::<ContainerInspect, _, _>(|ctx, args| async move {
            ctx.driver.inspect(&args.container).await
        });
        r.register::<ContainerStart, _, _>(|ctx, a| {
            act(ctx, a.container, Act::Plain(Action::Start))
        });
        r.register::<ContainerStop, _, _>(|ctx, a| async move {
            let grace = a.grace()?;
            act(ctx, a.container, Act::Stop(grace)).await
        });
        r.register::<ContainerRestart, _, _>(|ctx, a| async move {
            let grace = a.grace()?;
            act(ctx, a.container, Act::Restart(grace)).await
        });
        r.register::<ContainerKill, _, _>(|ctx, a| async move {
            let signal = a.signal()?;
            act(ctx, a.container, Act::Kill(signal)).await
        });
        r.register::<ContainerPause, _, _>(|ctx, a| {
            act(ctx, a.container, Act::Plain(Action::Pause))
        });
        r.register::<ContainerUnpause, _, _>(|ctx, a| {
            act(ctx, a.container, Act::Plain(Action::Unpause))
        });
        r.register::<ContainerLogs, _, _>(|ctx, a| async move {
            let tail = a.tail()?;
            let t = ctx.driver.resolve(&a.container).await?;
            ctx.driver
                .logs(&t, tail, a.timestamps, zedops_proto::MAX_REPLY_BYTES / 2)
                .await
        });
        r
    }
}

/// An action with its parameters.
#[derive(Debug, Clone)]
pub enum Act {
    Plain(Action),
    Stop(u32),
    Restart(u32),
    Kill(String),
}

/// Resolves the container, performs the action and returns its new row with `changed`.
/// Shared by the request handlers and the Home Assistant `/set` commands.
pub async fn act(
    ctx: Arc<Ctx>,
    container: ContainerRef,
    what: Act,
) -> Result<ActionResult, ErrorBody> {
    let d = &ctx.driver;
    let t = d.resolve(&container).await?;
    let changed = match what {
        Act::Plain(Action::Start) => d.start(&t).await?,
        Act::Plain(Action::Pause) => d.pause(&t).await?,
        Act::Plain(Action::Unpause) => d.unpause(&t).await?,
        Act::Plain(Action::Stop) | Act::Stop(_) => {
            let grace = if let Act::Stop(g) = what {
                g
            } else {
                ops::DEFAULT_GRACE_S
            };
            d.stop(&t, grace).await?
        }
        Act::Plain(Action::Restart) | Act::Restart(_) => {
            let grace = if let Act::Restart(g) = what {
                g
            } else {
                ops::DEFAULT_GRACE_S
            };
            d.restart(&t, grace).await?
        }
        Act::Plain(Action::Kill) => d.kill(&t, "SIGKILL").await?,
        Act::Kill(ref sig) => d.kill(&t, sig).await?,
    };
    let published = if changed {
        ctx.published_row(&t.id).await
    } else {
        None
    };
    let container = match published {
        Some(row) => row,
        None => d.row(&t.id).await?,
    };
    Ok(ActionResult { container, changed })
}
