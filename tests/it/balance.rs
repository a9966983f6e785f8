//! Many servers behind one channel: reconnecting after a server restarts, balancing over
//! replicas, losing one mid-load, retrying only idempotent calls, and draining a replica
//! that shuts down. Every replica is a real TCP server in its own runtime, so killing it
//! closes its sockets the way a dying process does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rpc_core::{RpcError, Server, ServerConfig, service};
use rpc_tests::*;
use rpc_transport::policy::BalanceConfig;

/// What a replica has served.
#[derive(Debug, Default)]
struct Served {
    gets: AtomicUsize,
    bumps: AtomicUsize,
}

/// A service that says which replica answered.
#[service]
trait Replicated {
    /// The replica's id (safe to retry).
    #[idempotent]
    async fn get(&self) -> u32;
    /// Counts a call and returns the replica's id (not safe to retry).
    async fn bump(&self) -> u32;
    /// Waits `millis`, then returns the replica's id.
    async fn slow(&self, millis: u64) -> u32;
}

struct ReplicatedImpl {
    id: u32,
    served: Arc<Served>,
    /// Calls that arrive while set never return (until the replica dies).
    stuck: Arc<AtomicBool>,
}

impl ReplicatedImpl {
    async fn maybe_stick(&self) {
        if self.stuck.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

impl Replicated for ReplicatedImpl {
    async fn get(&self) -> u32 {
        self.served.gets.fetch_add(1, Ordering::SeqCst);
        self.maybe_stick().await;
        self.id
    }

    async fn bump(&self) -> u32 {
        self.served.bumps.fetch_add(1, Ordering::SeqCst);
        self.maybe_stick().await;
        self.id
    }

    async fn slow(&self, millis: u64) -> u32 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        self.id
    }
}

/// A replica and its counters.
struct Node {
    id: u32,
    served: Arc<Served>,
    stuck: Arc<AtomicBool>,
    config: ServerConfig,
}

impl Node {
    fn new(id: u32) -> Node {
        Node {
            id,
            served: Arc::default(),
            stuck: Arc::default(),
            config: ServerConfig::default(),
        }
    }

    fn start(&self, address: SocketAddr) -> Replica {
        let server = Server::with_config(self.config.clone()).add_service(ReplicatedServer::new(
            ReplicatedImpl {
                id: self.id,
                served: self.served.clone(),
                stuck: self.stuck.clone(),
            },
        ));
        Replica::start(server, address)
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn quick_config() -> BalanceConfig {
    let mut config = BalanceConfig::default();
    config.reconnect_backoff = Duration::from_millis(20);
    config.max_reconnect_backoff = Duration::from_millis(100);
    config
}

/// Calls `get` until `done` says the answers are as wanted, for at most 5 s.
async fn until_answers(
    client: &ReplicatedClient,
    what: &str,
    mut done: impl FnMut(&[u32]) -> bool,
) -> Vec<u32> {
    let limit = Instant::now() + Duration::from_secs(5);
    let mut answers = Vec::new();
    while !done(&answers) {
        assert!(
            Instant::now() < limit,
            "timed out waiting until {what}: {answers:?}"
        );
        if let Ok(id) = client.get().await {
            answers.push(id);
        }
    }
    answers
}

#[tokio::test]
async fn a_reconnecting_channel_survives_a_server_restart() {
    let node = Node::new(1);
    let replica = node.start(any_port());
    let address = replica.address;
    let channel = rpc_transport::tcp::reconnecting_with(address.to_string(), quick_config());
    let client = ReplicatedClient::new(channel.clone());
    assert_eq!(client.get().await.unwrap(), 1);

    // A call in flight when the server dies fails, and is not replayed.
    let in_flight = tokio::spawn(client.slow(5_000));
    tokio::time::sleep(Duration::from_millis(50)).await;
    replica.kill().await;
    let error = in_flight.await.unwrap().unwrap_err();
    assert!(
        matches!(error, RpcError::ConnectionClosed { .. }),
        "{error}"
    );

    // Calls made while it is down wait for it, within their deadline.
    let waiting = tokio::spawn(client.with_timeout(Duration::from_secs(5)).bump());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished());
    let _replica = node.start(address);
    assert_eq!(waiting.await.unwrap().unwrap(), 1);
    assert!(!channel.is_closed());
}

#[tokio::test]
async fn with_wait_for_ready_off_calls_fail_fast_while_no_server_is_up() {
    let node = Node::new(1);
    let replica = node.start(any_port());
    let address = replica.address;
    replica.kill().await;
    let mut config = quick_config();
    config.wait_for_ready = false;
    let client = ReplicatedClient::new(rpc_transport::tcp::reconnecting_with(
        address.to_string(),
        config,
    ));
    let started = Instant::now();
    let error = client.get().await.unwrap_err();
    assert!(matches!(error, RpcError::Unavailable { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_millis(100));
    // A call with a deadline and no server waits no longer than its deadline.
    let mut config = quick_config();
    config.ready_timeout = Duration::from_secs(60);
    let client = ReplicatedClient::new(rpc_transport::tcp::reconnecting_with(
        address.to_string(),
        config,
    ));
    let started = Instant::now();
    let error = client
        .with_timeout(Duration::from_millis(200))
        .get()
        .await
        .unwrap_err();
    assert!(
        matches!(error, RpcError::DeadlineExceeded { .. }),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn calls_spread_over_replicas_and_a_dead_one_costs_only_its_calls_in_flight() {
    let nodes: Vec<Node> = (1..=3).map(Node::new).collect();
    let mut replicas: Vec<Option<Replica>> = nodes
        .iter()
        .map(|node| Some(node.start(any_port())))
        .collect();
    let addresses: Vec<String> = replicas
        .iter()
        .map(|replica| replica.as_ref().unwrap().address.to_string())
        .collect();
    let client = ReplicatedClient::new(rpc_transport::tcp::balanced(&addresses, quick_config()));
    until_answers(&client, "every replica answered", |answers| {
        (1..=3).all(|id| answers.contains(&id))
    })
    .await;

    // Load from many tasks while replica 2 dies.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let call = tokio::time::timeout(Duration::from_secs(5), client.slow(2));
                match call.await.expect("no call hangs") {
                    Ok(_) => {}
                    Err(error) => failures.push(error),
                }
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    replicas[1].take().unwrap().kill().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.unwrap());
    }
    // Only the calls in flight on the dead replica failed (16 workers: at most 16).
    assert!(failures.len() <= 16, "{} failures", failures.len());
    for error in &failures {
        assert!(
            matches!(
                error,
                RpcError::ConnectionClosed { .. } | RpcError::Unavailable { .. }
            ),
            "{error}"
        );
    }

    // Traffic moved to the others...
    let answers = until_answers(&client, "30 answers", |answers| answers.len() >= 30).await;
    assert!(!answers.contains(&2), "{answers:?}");
    // ...and the replica rejoins when it comes back.
    let _back = nodes[1].start(addresses[1].parse().unwrap());
    until_answers(&client, "the restarted replica answered", |answers| {
        answers.contains(&2)
    })
    .await;
}

/// Replica 1 stops answering (its handlers hang), then dies. Calls to the idempotent `get`
/// that were stuck there are retried on replica 2 and succeed; calls to `bump` that were
/// stuck there fail and are not replayed: each bump ran exactly once somewhere, or failed.
#[tokio::test]
async fn only_idempotent_calls_are_retried_elsewhere() {
    let stuck_node = Node::new(1);
    let healthy_node = Node::new(2);
    let stuck = stuck_node.start(any_port());
    let healthy = healthy_node.start(any_port());
    let addresses = [stuck.address.to_string(), healthy.address.to_string()];
    let client = ReplicatedClient::new(rpc_transport::tcp::balanced(&addresses, quick_config()));
    until_answers(&client, "both replicas answered", |answers| {
        answers.contains(&1) && answers.contains(&2)
    })
    .await;
    let gets_before = stuck_node.served.gets.load(Ordering::SeqCst);
    stuck_node.stuck.store(true, Ordering::SeqCst);

    let gets: Vec<_> = (0..20).map(|_| tokio::spawn(client.get())).collect();
    let bumps: Vec<_> = (0..20).map(|_| tokio::spawn(client.bump())).collect();
    eventually("some calls are stuck on replica 1", || {
        stuck_node.served.gets.load(Ordering::SeqCst) > gets_before
            && stuck_node.served.bumps.load(Ordering::SeqCst) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stuck.kill().await;

    for get in gets {
        assert_eq!(
            get.await.unwrap().unwrap(),
            2,
            "a get is retried on replica 2"
        );
    }
    let mut failed_bumps = 0;
    for bump in bumps {
        match bump.await.unwrap() {
            Ok(id) => assert_eq!(id, 2),
            Err(error) => {
                assert!(
                    matches!(error, RpcError::ConnectionClosed { .. }),
                    "{error}"
                );
                failed_bumps += 1;
            }
        }
    }
    assert_eq!(
        failed_bumps,
        stuck_node.served.bumps.load(Ordering::SeqCst),
        "every bump that reached replica 1 failed, none was replayed"
    );
    assert_eq!(
        healthy_node.served.bumps.load(Ordering::SeqCst),
        20 - failed_bumps,
        "replica 2 ran the others once each"
    );
    drop(healthy);
}

/// A replica that shuts down gracefully reports `NotServing` first; balanced clients stop
/// sending it calls during its drain delay, so no call fails.
#[tokio::test]
async fn a_replica_shutting_down_is_drained_before_it_refuses_calls() {
    let mut leaving_node = Node::new(1);
    leaving_node.config.health_drain_delay = Duration::from_millis(500);
    let staying_node = Node::new(2);
    let leaving = leaving_node.start(any_port());
    let staying = staying_node.start(any_port());
    let addresses = [leaving.address.to_string(), staying.address.to_string()];
    let client = ReplicatedClient::new(rpc_transport::tcp::balanced(&addresses, quick_config()));
    until_answers(&client, "both replicas answered", |answers| {
        answers.contains(&1) && answers.contains(&2)
    })
    .await;

    let shutting_down = leaving.start_shutdown();
    // The NOT_SERVING report crosses the connection at once; give it a moment.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let served_before = leaving_node.served.bumps.load(Ordering::SeqCst);
    for _ in 0..50 {
        assert_eq!(
            client.bump().await.unwrap(),
            2,
            "no call goes to the leaving replica"
        );
    }
    assert_eq!(
        leaving_node.served.bumps.load(Ordering::SeqCst),
        served_before
    );
    shutting_down.await.unwrap();
    assert_eq!(client.bump().await.unwrap(), 2);
    drop(staying);
}

#[tokio::test]
async fn a_dns_name_is_resolved_to_its_replicas() {
    let node = Node::new(7);
    let replica = node.start(any_port());
    let name = format!("localhost:{}", replica.address.port());
    let client = ReplicatedClient::new(rpc_transport::tcp::balanced_dns(name, quick_config()));
    assert_eq!(
        client
            .with_timeout(Duration::from_secs(5))
            .get()
            .await
            .unwrap(),
        7
    );
}

/// A resolver whose answer the test changes, as DNS does when replicas come and go.
#[derive(Clone, Default)]
struct Changing(Arc<std::sync::Mutex<Vec<String>>>);

impl rpc_transport::policy::Resolve for Changing {
    fn resolve(&self) -> rpc_transport::policy::BoxFuture<'_, Result<Vec<String>, RpcError>> {
        let endpoints = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(endpoints) })
    }

    fn describe(&self) -> String {
        "a changing list".to_owned()
    }
}

/// Endpoints are resolved again every `resolve_interval`: a replica that appears gets
/// calls, one that disappears gets none.
#[tokio::test]
async fn replicas_that_appear_and_disappear_in_resolution_are_followed() {
    let (first_node, second_node) = (Node::new(1), Node::new(2));
    let first = first_node.start(any_port());
    let second = second_node.start(any_port());
    let resolver = Changing::default();
    resolver.0.lock().unwrap().push(first.address.to_string());
    let mut config = quick_config();
    config.resolve_interval = Duration::from_millis(50);
    let connector = rpc_transport::tcp::TcpConnector::default();
    let client = ReplicatedClient::new(rpc_transport::policy::balanced(
        resolver.clone(),
        connector,
        config,
    ));
    let answers = until_answers(&client, "ten answers", |answers| answers.len() >= 10).await;
    assert!(answers.iter().all(|id| *id == 1), "{answers:?}");

    resolver.0.lock().unwrap().push(second.address.to_string());
    until_answers(&client, "the new replica answered", |answers| {
        answers.contains(&2)
    })
    .await;

    resolver.0.lock().unwrap().remove(0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answers = until_answers(&client, "twenty answers", |answers| answers.len() >= 20).await;
    assert!(answers.iter().all(|id| *id == 2), "{answers:?}");
    drop((first, second));
}

/// A server that accepts connections and sends its preface but never answers anything (not
/// even the health watch) cannot hold an endpoint: after `health_timeout` the connection is
/// dropped and dialled again, and calls made meanwhile fail within their deadline instead
/// of going to it.
#[tokio::test]
async fn a_server_that_never_answers_the_health_watch_is_dialled_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = socket.write_all(&rpc_core::wire::PREFACE).await;
                let mut sink = [0_u8; 1024];
                while matches!(socket.read(&mut sink).await, Ok(read) if read > 0) {}
            });
        }
    });
    let mut config = quick_config();
    config.health_timeout = Duration::from_millis(100);
    let client = ReplicatedClient::new(rpc_transport::tcp::balanced([address.to_string()], config));
    let error = client
        .with_timeout(Duration::from_millis(500))
        .get()
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::DeadlineExceeded {}), "{error}");
    eventually("the silent server was dialled again", || {
        accepted.load(Ordering::SeqCst) >= 3
    })
    .await;
}
