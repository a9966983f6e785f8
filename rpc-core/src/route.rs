//! For authors of routing policy (balancers, middleware, failover): a [`Route`] carries a
//! [`Channel`](crate::Channel)'s calls over connections of its choosing, seeing each unary
//! call as a [`ClientCall`] with encoded arguments. `rpc-policy` builds the standard ones
//! (balanced and reconnecting channels, client middleware) on this and nothing else.

pub use crate::call::{ClientCall, SendTracker};
pub use crate::channel::{BoxFuture, Route};
