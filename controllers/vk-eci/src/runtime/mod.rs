//! What runs the controllers rather than being one: the operator's wiring (one informer
//! cache, the controllers, the servers), the leader election, the context every controller
//! shares, the reconcile wrapper, metrics, liveness and the admin server.

pub mod admin;
pub mod context;
pub mod events;
pub mod fanout;
pub mod leader;
pub mod liveness;
pub mod metrics;
pub mod operator;
pub mod reconcile;
