//! Calls both ways on one connection: a client that serves (`ChannelConfig::serve`) can be
//! called back by the server's handlers through `Context::peer_channel`, during a call
//! (a callback) or later (a push), over every transport; calls in each direction keep their
//! own deadlines, limits and interceptors, and end with `ConnectionClosed` when the other
//! side goes away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rpc_core::{
    CallInfo, ChannelConfig, Context, RpcError, Server, ServerConfig, Streaming, service,
};
use rpc_tests::*;

/// What a worker serves: the coordinator calls it.
#[service]
pub(crate) trait Worker {
    /// Does `job`, answering with the worker's name.
    async fn work(&self, job: String) -> String;
    /// Counts from 1 to `n` as a stream.
    async fn count(&self, n: u32) -> Streaming<u32>;
    /// Never answers (until the call is dropped).
    async fn stall(&self) -> u32;
}

/// What a coordinator serves: workers call it.
#[service]
pub(crate) trait Coordinator {
    /// Asks the caller to do `job` before answering (a callback during the call), with
    /// `token` as its authorization metadata; `Err` with the callback's error.
    async fn delegate(
        &self,
        cx: &Context,
        job: String,
        token: Option<String>,
    ) -> Result<String, String>;
    /// Asks the caller to count to `n` over a stream and sums what arrives.
    async fn tally(&self, cx: &Context, n: u32) -> Result<u64, String>;
    /// Keeps a channel to the caller, for pushes later; whether the caller serves.
    async fn register(&self, cx: &Context) -> bool;
    /// Calls the caller back with a call that never answers.
    async fn hold(&self, cx: &Context) -> bool;
}

/// A worker with a name, counting the jobs it did and its stalled calls still running.
#[derive(Clone, Default)]
pub(crate) struct NamedWorker {
    name: &'static str,
    jobs: Arc<AtomicUsize>,
    stalled: Arc<AtomicUsize>,
}

impl NamedWorker {
    pub(crate) fn new(name: &'static str) -> NamedWorker {
        NamedWorker {
            name,
            ..NamedWorker::default()
        }
    }
}

/// Counts a stalled call as running for as long as its handler lives.
struct Stalled(Arc<AtomicUsize>);

impl Drop for Stalled {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Worker for NamedWorker {
    async fn work(&self, job: String) -> String {
        self.jobs.fetch_add(1, Ordering::SeqCst);
        format!("{} by {}", job.to_uppercase(), self.name)
    }

    async fn count(&self, n: u32) -> Streaming<u32> {
        Streaming::new(futures_util::stream::iter(1..=n))
    }

    async fn stall(&self) -> u32 {
        self.stalled.fetch_add(1, Ordering::SeqCst);
        let _running = Stalled(self.stalled.clone());
        std::future::pending().await
    }
}

/// A coordinator keeping the workers that registered.
#[derive(Clone, Default)]
pub(crate) struct Hub {
    workers: Arc<Mutex<Vec<WorkerClient>>>,
}

impl Hub {
    /// The workers that registered so far.
    pub(crate) fn workers(&self) -> Vec<WorkerClient> {
        self.workers.lock().unwrap().clone()
    }
}

impl Coordinator for Hub {
    async fn delegate(
        &self,
        cx: &Context,
        job: String,
        token: Option<String>,
    ) -> Result<String, String> {
        let channel = cx.peer_channel().ok_or("the caller serves nothing")?;
        let mut worker = WorkerClient::new(channel);
        if let Some(token) = token {
            worker = worker.with_metadata("authorization", format!("Bearer {token}"));
        }
        worker.work(job).await.map_err(|error| error.to_string())
    }

    async fn tally(&self, cx: &Context, n: u32) -> Result<u64, String> {
        let channel = cx.peer_channel().ok_or("the caller serves nothing")?;
        let mut counted = WorkerClient::new(channel)
            .count(n)
            .await
            .map_err(|error| error.to_string())?;
        let mut sum = 0;
        while let Some(item) = counted.next().await {
            sum += u64::from(item.map_err(|error| error.to_string())?);
        }
        Ok(sum)
    }

    async fn register(&self, cx: &Context) -> bool {
        let Some(channel) = cx.peer_channel() else {
            return false;
        };
        self.workers
            .lock()
            .unwrap()
            .push(WorkerClient::new(channel));
        true
    }

    async fn hold(&self, cx: &Context) -> bool {
        let Some(channel) = cx.peer_channel() else {
            return false;
        };
        WorkerClient::new(channel).stall().await.is_ok()
    }
}

/// A server with a coordinator, and the coordinator.
pub(crate) fn coordinator_server(config: ServerConfig) -> (Server, Hub) {
    let hub = Hub::default();
    let server = Server::with_config(config).add_service(CoordinatorServer::new(hub.clone()));
    (server, hub)
}

/// A [`coordinator_server`] with the default configuration, started on `transport`.
async fn coordinator_on(transport: Transport) -> (TestServer, Hub) {
    let (server, hub) = coordinator_server(ServerConfig::default());
    (TestServer::start(server, transport).await, hub)
}

/// A channel configuration serving `worker`.
pub(crate) fn serving(worker: &NamedWorker) -> ChannelConfig {
    ChannelConfig::default().serve(Server::new().add_service(WorkerServer::new(worker.clone())))
}

/// A callback during a call, a streamed callback and a push after the call, over `channel`
/// (connected with [`serving`]`(worker)` to a [`coordinator_server`] whose coordinator is
/// `hub`). Shared with the TLS tests.
pub(crate) async fn callbacks_and_pushes_work(
    channel: rpc_core::Channel,
    worker: &NamedWorker,
    hub: &Hub,
    what: &str,
) {
    let coordinator = CoordinatorClient::new(channel);
    let answer = coordinator
        .delegate("compile".to_owned(), None)
        .await
        .unwrap();
    assert_eq!(answer, Ok("COMPILE by w1".to_owned()), "{what}");
    // 300 items: past the window of 64, so WINDOW frames flow back under the callee's ids.
    let sum = coordinator.tally(300).await.unwrap();
    assert_eq!(sum, Ok(300 * 301 / 2), "{what}");
    // Calls the other way never disturbed this side's own.
    for job in 0..20 {
        let answer = coordinator
            .delegate(format!("job{job}"), None)
            .await
            .unwrap();
        assert_eq!(answer, Ok(format!("JOB{job} by w1")), "{what}");
    }
    assert!(coordinator.register().await.unwrap(), "{what}");
    let pushed = hub.workers().pop().expect("a registered worker");
    assert_eq!(
        pushed.work("later".to_owned()).await.unwrap(),
        "LATER by w1",
        "{what}"
    );
    assert_eq!(worker.jobs.load(Ordering::SeqCst), 22, "{what}");
}

#[tokio::test]
async fn a_handler_calls_its_caller_back_during_the_call_and_pushes_to_it_later() {
    for transport in Transport::ALL {
        let (server, hub) = coordinator_on(transport).await;
        let worker = NamedWorker::new("w1");
        let channel = server.connect_with(serving(&worker)).await;
        callbacks_and_pushes_work(channel, &worker, &hub, &format!("{transport:?}")).await;
    }
}

#[tokio::test]
async fn a_client_that_serves_nothing_has_no_channel_back() {
    for transport in Transport::ALL {
        let (server, hub) = coordinator_on(transport).await;
        let coordinator = CoordinatorClient::new(server.connect().await);
        let answer = coordinator.delegate("x".to_owned(), None).await.unwrap();
        assert_eq!(
            answer,
            Err("the caller serves nothing".to_owned()),
            "{transport:?}"
        );
        assert!(!coordinator.register().await.unwrap(), "{transport:?}");
        assert!(hub.workers().is_empty());
    }
}

#[tokio::test]
async fn a_client_serving_other_services_answers_unknown_service() {
    for transport in Transport::ALL {
        let (server, _) = coordinator_on(transport).await;
        let config = ChannelConfig::default().serve(Server::new());
        let coordinator = CoordinatorClient::new(server.connect_with(config).await);
        let answer = coordinator.delegate("x".to_owned(), None).await.unwrap();
        let error = answer.unwrap_err();
        assert!(error.contains("unknown service"), "{transport:?}: {error}");
    }
}

#[tokio::test]
async fn calls_to_a_client_that_went_away_fail_with_connection_closed() {
    for transport in Transport::ALL {
        let (server, hub) = coordinator_on(transport).await;
        let worker = NamedWorker::new("w1");
        let channel = server.connect_with(serving(&worker)).await;
        let coordinator = CoordinatorClient::new(channel);
        assert!(coordinator.register().await.unwrap());
        let pushed = hub.workers().pop().unwrap();
        // A push in flight when the client goes away ends, and so does every later one.
        let in_flight = tokio::spawn({
            let pushed = pushed.clone();
            async move { pushed.stall().await }
        });
        eventually("the push reached the worker", || {
            worker.stalled.load(Ordering::SeqCst) == 1
        })
        .await;
        drop(coordinator);
        let error = tokio::time::timeout(Duration::from_secs(5), in_flight)
            .await
            .expect("the push in flight ended")
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(error, RpcError::ConnectionClosed { .. }),
            "{transport:?}: {error}"
        );
        let error = pushed.work("later".to_owned()).await.unwrap_err();
        assert!(
            matches!(error, RpcError::ConnectionClosed { .. }),
            "{transport:?}: {error}"
        );
        eventually("the worker's handler was dropped", || {
            worker.stalled.load(Ordering::SeqCst) == 0
        })
        .await;
    }
}

#[tokio::test]
async fn a_push_has_its_own_deadline_and_cancelling_it_stops_the_clients_handler() {
    for transport in Transport::ALL {
        let (server, hub) = coordinator_on(transport).await;
        let worker = NamedWorker::new("w1");
        let coordinator = CoordinatorClient::new(server.connect_with(serving(&worker)).await);
        assert!(coordinator.register().await.unwrap());
        let pushed = hub.workers().pop().unwrap();
        let started = Instant::now();
        let error = pushed
            .with_timeout(Duration::from_millis(100))
            .stall()
            .await
            .unwrap_err();
        assert!(
            matches!(error, RpcError::DeadlineExceeded { .. }),
            "{transport:?}: {error}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{transport:?}");
        eventually("the worker dropped the handler", || {
            worker.stalled.load(Ordering::SeqCst) == 0
        })
        .await;
        // The connection carries on, both ways.
        assert_eq!(pushed.work("next".to_owned()).await.unwrap(), "NEXT by w1");
        assert!(coordinator.register().await.unwrap());
    }
}

#[tokio::test]
async fn the_clients_interceptors_judge_the_calls_it_receives() {
    for transport in Transport::ALL {
        let (server, _) = coordinator_on(transport).await;
        let worker = NamedWorker::new("w1");
        let guarded = Server::new()
            .add_service(WorkerServer::new(worker.clone()))
            .with_interceptor(|call: &CallInfo<'_>| {
                match call.context().metadata("authorization") {
                    Some("Bearer coordinator") => Ok(()),
                    _ => Err(RpcError::Unauthenticated {
                        message: "only the coordinator calls workers".into(),
                    }),
                }
            });
        let config = ChannelConfig::default().serve(guarded);
        let coordinator = CoordinatorClient::new(server.connect_with(config).await);
        let refused = coordinator.delegate("x".to_owned(), None).await.unwrap();
        let error = refused.unwrap_err();
        assert!(
            error.contains("only the coordinator calls workers"),
            "{transport:?}: {error}"
        );
        let admitted = coordinator
            .delegate("x".to_owned(), Some("coordinator".to_owned()))
            .await
            .unwrap();
        assert_eq!(admitted, Ok("X by w1".to_owned()), "{transport:?}");
        assert_eq!(
            worker.jobs.load(Ordering::SeqCst),
            1,
            "{transport:?}: the refused call never ran"
        );
    }
}

/// A worker connected to a coordinator that runs one handler at a time.
async fn one_slot_coordinator(
    transport: Transport,
) -> (TestServer, NamedWorker, CoordinatorClient) {
    let mut config = ServerConfig::default();
    config.max_concurrent_calls = 1;
    let (server, _) = coordinator_server(config);
    let server = TestServer::start(server, transport).await;
    let worker = NamedWorker::new("w1");
    let coordinator = CoordinatorClient::new(server.connect_with(serving(&worker)).await);
    (server, worker, coordinator)
}

/// The server cannot stop reading when it has no handler free: the answer to a handler's
/// callback comes behind the client's next requests. With one handler slot, a call that
/// calls back completes while the next call waits for the slot.
#[tokio::test]
async fn a_callback_completes_while_every_handler_slot_is_taken() {
    for transport in Transport::ALL {
        let (_server, _worker, coordinator) = one_slot_coordinator(transport).await;
        let calls: Vec<_> = (0..2)
            .map(|n| {
                let coordinator = coordinator.clone();
                tokio::spawn(async move { coordinator.delegate(format!("job{n}"), None).await })
            })
            .collect();
        for (n, call) in calls.into_iter().enumerate() {
            let answer = tokio::time::timeout(Duration::from_secs(5), call)
                .await
                .unwrap_or_else(|_| panic!("{transport:?}: a call hung"))
                .unwrap()
                .unwrap();
            assert_eq!(answer, Ok(format!("JOB{n} by w1")), "{transport:?}");
        }
    }
}

/// Reading on, the server holds waiting calls in memory: as many as it has handler slots,
/// after which a call is refused at once (`ResourceExhausted`) without running.
#[tokio::test]
async fn past_as_many_waiting_calls_as_handler_slots_calls_are_refused() {
    for transport in Transport::ALL {
        let (_server, worker, coordinator) = one_slot_coordinator(transport).await;
        // The only slot is taken by a call whose callback never answers.
        let holding = tokio::spawn({
            let coordinator = coordinator.clone();
            async move { coordinator.hold().await }
        });
        eventually("the slot is taken", || {
            worker.stalled.load(Ordering::SeqCst) == 1
        })
        .await;
        let mut calls: Vec<_> = (0..4)
            .map(|_| {
                let coordinator = coordinator.clone();
                tokio::spawn(async move { coordinator.register().await })
            })
            .collect();
        eventually("all but one call were answered", || {
            calls.iter().filter(|call| call.is_finished()).count() == 3
        })
        .await;
        let waiting = calls.iter().position(|call| !call.is_finished()).unwrap();
        let waiting = calls.remove(waiting);
        for call in calls {
            let error = call.await.unwrap().unwrap_err();
            assert!(
                matches!(&error, RpcError::ResourceExhausted { message } if message.contains("waiting")),
                "{transport:?}: {error}"
            );
        }
        holding.abort();
        // Cancelling the held call frees the slot for the waiting one.
        let registered = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap_or_else(|_| panic!("{transport:?}: the waiting call never ran"))
            .unwrap();
        assert!(registered.unwrap(), "{transport:?}");
    }
}

/// The client's own server keeps its limits for calls it receives: with one handler slot,
/// one push runs, one waits, and the next is refused.
#[tokio::test]
async fn the_clients_own_limits_hold_for_calls_it_receives() {
    for transport in Transport::ALL {
        let (server, hub) = coordinator_on(transport).await;
        let worker = NamedWorker::new("w1");
        let mut limits = ServerConfig::default();
        limits.max_concurrent_calls = 1;
        let one_at_a_time =
            Server::with_config(limits).add_service(WorkerServer::new(worker.clone()));
        let coordinator = CoordinatorClient::new(
            server
                .connect_with(ChannelConfig::default().serve(one_at_a_time))
                .await,
        );
        assert!(coordinator.register().await.unwrap());
        let pushed = hub.workers().pop().unwrap();
        let pushes: Vec<_> = (0..3)
            .map(|_| {
                let pushed = pushed.clone();
                tokio::spawn(async move { pushed.stall().await })
            })
            .collect();
        eventually("one push runs and one is refused", || {
            worker.stalled.load(Ordering::SeqCst) == 1
                && pushes.iter().filter(|push| push.is_finished()).count() == 1
        })
        .await;
        let mut pushes = pushes;
        let refused = pushes.iter().position(|push| push.is_finished()).unwrap();
        let error = pushes.remove(refused).await.unwrap().unwrap_err();
        assert!(
            matches!(&error, RpcError::ResourceExhausted { message } if message.contains("waiting")),
            "{transport:?}: {error}"
        );
        for push in pushes {
            push.abort();
        }
    }
}
