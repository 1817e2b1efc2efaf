//! The op registry: one handler per op, keyed by the op's name. The v1 set comes from
//! `zedops_proto::ops` and, for container actions, from the action table
//! (`zedops_proto::ACTIONS`); more ops (such as operator-defined actions) are registered over it
//! at run time ([`Registry::extend`]). MQTT requests and Home Assistant commands both run through
//! [`Registry::dispatch`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use zedops_proto::ops::{
    self, ActionResult, ContainerInspect, ContainerList, ContainerLogs, ContainersList, Op, Ping,
    Pong,
};
use zedops_proto::{Action, ActionRequest, Container, ErrorBody, Reply, ACTIONS};

use crate::docker::Driver;

/// What every handler can use.
pub struct Ctx {
    pub agent: String,
    pub driver: Driver,
    /// Asks the session's main loop to list the containers and publish what changed (see
    /// [`Ctx::published_row`]).
    pub publish: mpsc::Sender<PublishRow>,
    /// The operator-defined actions served (`crate::actions`).
    pub actions: Arc<crate::actions::Book>,
    /// The streams served now (`crate::streams`).
    pub streams: Arc<crate::streams::Streams>,
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
/// A handler: the request's raw arguments in, a reply out.
pub type HandlerFn = Arc<dyn Fn(Arc<Ctx>, &[u8]) -> BoxReply + Send + Sync>;

/// Handlers by op name.
#[derive(Clone, Default)]
pub struct Registry {
    map: HashMap<String, HandlerFn>,
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
        self.register_raw(
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

    /// Registers a handler of raw arguments under `op` (replacing one of that name).
    pub fn register_raw(&mut self, op: impl Into<String>, handler: HandlerFn) {
        self.map.insert(op.into(), handler);
    }

    /// Adds every op of `other`, over the ones of the same name.
    pub fn extend(&mut self, other: Registry) {
        self.map.extend(other.map);
    }

    /// The op names served, sorted.
    pub fn ops(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.map.keys().map(String::as_str).collect();
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
                streams: u32::try_from(ctx.streams.active()).unwrap_or(u32::MAX),
            })
        });
        r.register::<ContainersList, _, _>(|ctx, args| async move {
            Ok(ContainerList {
                containers: ctx.driver.list(args.all).await?,
            })
        });
        r.register::<ContainerInspect, _, _>(|ctx, args| async move {
            Ok(ctx.driver.inspect(&args.container).await?)
        });
        for spec in &ACTIONS {
            r.register_action(spec.action);
        }
        r.register::<ContainerLogs, _, _>(|ctx, a| async move {
            let q = crate::streams::log_query(&a)?;
            let t = ctx.driver.resolve(&a.container).await?;
            let budget = zedops_proto::MAX_REPLY_BYTES / 2;
            Ok(ctx.driver.logs(&t, &q, budget).await?)
        });
        r.register::<ops::ContainerExec, _, _>(|ctx, a| async move {
            let deadline = a.check()?;
            let t = ctx.driver.resolve(&a.container).await?;
            let max = ops::DEFAULT_OUTPUT_BYTES;
            Ok(ctx.driver.exec(&t, &a, deadline, max).await?)
        });
        r.register::<ops::ContainerStats, _, _>(|ctx, a| async move {
            let t = match &a.container {
                Some(c) => Some(ctx.driver.resolve(c).await?),
                None => None,
            };
            Ok(ctx.driver.stats(t.as_ref()).await?)
        });
        r.register::<ops::ActionRun, _, _>(
            |ctx, a| async move { crate::actions::run(&ctx, a).await },
        );
        r
    }
}

impl Registry {
    /// Registers container action `action` under its op (`zedops_proto::ACTIONS`).
    fn register_action(&mut self, action: Action) {
        self.register_raw(
            action.op_name(),
            Arc::new(
                move |ctx, payload| match ActionRequest::from_payload(action, payload) {
                    Ok(req) => Box::pin(async move { Reply::from_result(act(ctx, req).await) }),
                    Err(e) => Box::pin(async move { Reply::failure(e) }),
                },
            ),
        );
    }
}

/// Resolves the container, performs the action and returns its new row with `changed`.
pub async fn act(ctx: Arc<Ctx>, req: ActionRequest) -> Result<ActionResult, ErrorBody> {
    req.check()?;
    let d = &ctx.driver;
    let t = d.resolve(&req.container).await?;
    let changed = match req.action {
        Action::Start => d.start(&t).await?,
        Action::Pause => d.pause(&t).await?,
        Action::Unpause => d.unpause(&t).await?,
        Action::Stop => d.stop(&t, req.grace()?).await?,
        Action::Restart => d.restart(&t, req.grace()?).await?,
        Action::Kill => d.kill(&t, &req.signal()?).await?,
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
