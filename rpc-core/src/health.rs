//! The health service every [`Server`](crate::Server) answers: whether the server, and
//! each of its services, is serving. Balanced channels watch it to stop sending calls to a
//! replica before it goes away.
//!
//! A server reports `Serving` for itself (the empty service name) and for each service it
//! has, until it is told otherwise with [`HealthReporter::set`] or begins a graceful
//! shutdown, which turns everything to `NotServing` first.
//!
//! ```
//! use rpc_core::health::ServingStatus;
//! use rpc_core::Server;
//!
//! let server = Server::new();
//! server.health().set("", ServingStatus::NotServing); // e.g. while warming a cache
//! assert_eq!(server.health().status(""), ServingStatus::NotServing);
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::stream::Streaming;

/// Whether a server or a service takes calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ServingStatus {
    /// It takes calls.
    Serving,
    /// It is up but takes no calls (draining, warming up, or told so).
    NotServing,
    /// The server has no service of that name.
    Unknown,
}

/// The health service, as a `#[service]` trait: call it with `HealthClient`.
#[crate::service(crate = "crate")]
pub trait Health {
    /// The status of `service` (`""` for the server as a whole).
    #[idempotent]
    async fn check(&self, service: String) -> ServingStatus;
    /// The status of `service` now and after every change. The stream ends after it
    /// reports `NotServing` for a server that is shutting down, so that watching does not
    /// hold the shutdown up.
    async fn watch(&self, service: String) -> Streaming<ServingStatus>;
}

/// The statuses a server reports, by service name (`""` for the server as a whole).
#[derive(Debug, Clone)]
struct Statuses {
    by_service: BTreeMap<String, ServingStatus>,
    shutting_down: bool,
}

impl Statuses {
    fn of(&self, service: &str) -> ServingStatus {
        self.by_service
            .get(service)
            .copied()
            .unwrap_or(ServingStatus::Unknown)
    }
}

/// Sets what a server's health service reports. Get it with `Server::health()`; clones
/// share the statuses.
#[derive(Debug, Clone)]
pub struct HealthReporter {
    statuses: Arc<watch::Sender<Statuses>>,
}

impl HealthReporter {
    pub(crate) fn new() -> HealthReporter {
        let mut by_service = BTreeMap::new();
        by_service.insert(String::new(), ServingStatus::Serving);
        HealthReporter {
            statuses: Arc::new(watch::Sender::new(Statuses {
                by_service,
                shutting_down: false,
            })),
        }
    }

    /// Sets the status of `service` (`""` for the server as a whole); watchers hear of it.
    pub fn set(&self, service: &str, status: ServingStatus) {
        self.statuses.send_if_modified(|statuses| {
            let previous = statuses.by_service.insert(service.to_owned(), status);
            previous != Some(status)
        });
    }

    /// The status of `service` (`""` for the server as a whole).
    pub fn status(&self, service: &str) -> ServingStatus {
        self.statuses.borrow().of(service)
    }

    /// Turns the server and every service to `NotServing` for good: the first step of a
    /// graceful shutdown. Watch streams report it and end.
    pub fn shut_down(&self) {
        self.statuses.send_modify(|statuses| {
            for status in statuses.by_service.values_mut() {
                *status = ServingStatus::NotServing;
            }
            statuses.shutting_down = true;
        });
    }

    /// Whether [`HealthReporter::shut_down`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.statuses.borrow().shutting_down
    }

    /// The status of `service` now and after every change (see [`Health::watch`]).
    fn watch(&self, service: String) -> Streaming<ServingStatus> {
        let receiver = self.statuses.subscribe();
        let updates = futures_util::stream::unfold(
            (receiver, service, None, false),
            |(mut receiver, service, last, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    let (status, shutting_down) = {
                        let statuses = receiver.borrow_and_update();
                        (statuses.of(&service), statuses.shutting_down)
                    };
                    if last != Some(status) || shutting_down {
                        return Some((status, (receiver, service, Some(status), shutting_down)));
                    }
                    // The sender lives as long as the server; if it is gone, so is the stream.
                    receiver.changed().await.ok()?;
                }
            },
        );
        Streaming::new(updates)
    }
}

/// The health service's implementation, over a server's reporter.
#[derive(Debug, Clone)]
pub(crate) struct HealthService(pub(crate) HealthReporter);

impl Health for HealthService {
    async fn check(&self, service: String) -> ServingStatus {
        self.0.status(&service)
    }

    async fn watch(&self, service: String) -> Streaming<ServingStatus> {
        self.0.watch(service)
    }
}
