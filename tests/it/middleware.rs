//! Server middleware: tower layers around every call, composing timeouts, concurrency
//! limits, load shedding and authentication in one mechanism.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use rpc_core::codegen::Reply;
use rpc_core::middleware::{BoxError, ServerCall};
use rpc_core::{RpcError, Server};
use rpc_tests::*;
use rpc_transport::policy::ChannelExt;

fn with_layers(layered: impl FnOnce(Server) -> Server) -> (Server, std::sync::Arc<ProbeStats>) {
    let (server, stats) = test_server();
    (layered(server), stats)
}

#[tokio::test]
async fn a_timeout_layer_ends_slow_calls_with_deadline_exceeded() {
    let (server, _) = with_layers(|server| {
        server.layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(50)))
    });
    for transport in Transport::ALL {
        let server = TestServer::start(server.clone(), transport).await;
        let probe = ProbeClient::new(server.connect().await);
        let error = probe.sleep(2_000).await.unwrap_err();
        assert!(
            matches!(error, RpcError::DeadlineExceeded { .. }),
            "{transport:?}: {error}"
        );
        assert_eq!(probe.sleep(1).await.unwrap(), 1);
    }
}

#[tokio::test]
async fn a_concurrency_limit_layer_runs_calls_one_at_a_time() {
    let (server, stats) =
        with_layers(|server| server.layer(tower::limit::ConcurrencyLimitLayer::new(1)));
    let server = TestServer::start(server, Transport::Tcp).await;
    let probe = ProbeClient::new(server.connect().await);
    let calls: Vec<_> = (0..4).map(|_| tokio::spawn(probe.sleep(30))).collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 30);
    }
    assert_eq!(stats.max_sleeping.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn load_shedding_refuses_calls_past_the_limit_with_resource_exhausted() {
    let (server, _) = with_layers(|server| {
        server
            .layer(tower::limit::ConcurrencyLimitLayer::new(1))
            .layer(tower::load_shed::LoadShedLayer::new())
    });
    let server = TestServer::start(server, Transport::Tcp).await;
    let probe = ProbeClient::new(server.connect().await);
    let busy = tokio::spawn(probe.sleep(300));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let error = probe.sleep(1).await.unwrap_err();
    assert!(
        matches!(error, RpcError::ResourceExhausted { .. }),
        "{error}"
    );
    assert_eq!(busy.await.unwrap().unwrap(), 300);
}

/// An authentication layer of our own: calls without the token are refused before their
/// handler runs, with the error the layer chose.
#[derive(Clone)]
struct RequireToken<S>(S);

impl<S> tower::Service<ServerCall> for RequireToken<S>
where
    S: tower::Service<ServerCall, Response = Reply, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        if call.context().metadata("token") != Some("open sesame") {
            let refusal = RpcError::Unauthenticated {
                message: format!("{}.{} needs a token", call.service(), call.method()).into(),
            };
            return Box::pin(async move { Err(refusal.into()) });
        }
        Box::pin(self.0.call(call))
    }
}

#[tokio::test]
async fn an_authentication_layer_composes_with_the_others() {
    let (server, _) = with_layers(|server| {
        server
            .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
            .layer(tower::layer::layer_fn(RequireToken))
    });
    let server = TestServer::start(server, Transport::Loopback).await;
    let calc = CalculatorClient::new(server.connect().await);
    let error = calc.add(1, 2).await.unwrap_err();
    assert!(
        matches!(&error, RpcError::Unauthenticated { message } if message.contains("Calculator.add needs a token")),
        "{error}"
    );
    assert_eq!(
        calc.with_metadata("token", "open sesame")
            .add(1, 2)
            .await
            .unwrap(),
        3
    );
}

/// A client layer that adds the token to every call.
#[derive(Clone)]
struct AddToken<S>(S);

impl<S> tower::Service<rpc_core::route::ClientCall> for AddToken<S>
where
    S: tower::Service<rpc_core::route::ClientCall>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut call: rpc_core::route::ClientCall) -> S::Future {
        let options = std::mem::take(call.options_mut());
        *call.options_mut() = options.with_metadata("token", "open sesame");
        self.0.call(call)
    }
}

#[tokio::test]
async fn client_layers_wrap_unary_calls() {
    let (server, _) = with_layers(|server| server.layer(tower::layer::layer_fn(RequireToken)));
    for transport in Transport::ALL {
        let server = TestServer::start(server.clone(), transport).await;
        let channel = server
            .connect()
            .await
            .layer(tower::layer::layer_fn(AddToken))
            .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(
                100,
            )));
        let calc = CalculatorClient::new(channel.clone());
        assert_eq!(calc.add(2, 2).await.unwrap(), 4, "{transport:?}");
        let probe = ProbeClient::new(channel);
        let error = probe.sleep(2_000).await.unwrap_err();
        assert!(
            matches!(error, RpcError::DeadlineExceeded { .. }),
            "{transport:?}: {error}"
        );
    }
}

/// An interceptor used as a layer composes with the rest of the stack like any layer.
#[tokio::test]
async fn an_interceptor_works_as_a_layer() {
    use rpc_core::middleware::InterceptLayer;
    let require_token = |call: &rpc_core::CallInfo<'_>| match call.context().metadata("token") {
        Some("open sesame") => Ok(()),
        _ => Err(RpcError::PermissionDenied {
            message: format!("no entry to {}", call.method()).into(),
        }),
    };
    let (server, _) = with_layers(|server| {
        server
            .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(50)))
            .layer(InterceptLayer::new(require_token))
    });
    let server = TestServer::start(server, Transport::Tcp).await;
    let probe = ProbeClient::new(server.connect().await);
    let error = probe.sleep(1).await.unwrap_err();
    assert!(
        matches!(&error, RpcError::PermissionDenied { message } if message.contains("no entry to sleep")),
        "{error}"
    );
    let allowed = probe.with_metadata("token", "open sesame");
    assert_eq!(allowed.sleep(1).await.unwrap(), 1);
    let error = allowed.sleep(2_000).await.unwrap_err();
    assert!(
        matches!(error, RpcError::DeadlineExceeded { .. }),
        "{error}"
    );
}
