//! What every reconciler does around its own work: nothing on a standby; cancelled the
//! moment this replica stops leading, so nothing it had not sent yet goes out (design §8a);
//! bounded in time, since any call can hang; its duration and outcome recorded.

use std::future::Future;
use std::time::Duration;

use kube::runtime::controller::Action;
use tokio::time::Instant;

use crate::runtime::context::Context;

/// How long one reconcile may take before it is abandoned and retried.
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the reconcile did not finish within {0:?}")]
pub struct ReconcileTimeout(pub Duration);

/// Runs `work` as one reconcile of `controller`, as the leader only.
pub async fn as_leader<E>(
    ctx: &Context,
    controller: &'static str,
    work: impl Future<Output = Result<Action, E>>,
) -> Result<Action, E>
where
    E: From<ReconcileTimeout>,
{
    let started = Instant::now();
    let bounded = tokio::time::timeout(RECONCILE_TIMEOUT, work);
    let result = match ctx.leadership.fenced(bounded).await {
        None => return Ok(Action::await_change()),
        Some(Ok(result)) => result,
        Some(Err(_)) => Err(ReconcileTimeout(RECONCILE_TIMEOUT).into()),
    };
    ctx.metrics
        .reconciled(controller, result.is_ok(), started.elapsed());
    result
}
