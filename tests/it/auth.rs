//! Interceptors: the server sees each call's service, method, metadata and peer before the
//! handler runs and can refuse it; the client adds credentials to every call.

use rpc_core::{CallInfo, ChannelConfig, ClientInterceptor, RpcError};
use rpc_tests::*;

/// A server whose `Calculator` wants a bearer token, and whose `div` only the admin may call.
fn guarded_server() -> rpc_core::Server {
    let (server, _) = test_server();
    server.with_interceptor(|call: &CallInfo<'_>| {
        if call.service() != "Calculator" {
            return Ok(());
        }
        match call.context().metadata("authorization") {
            Some("Bearer admin") => Ok(()),
            Some("Bearer user") if call.method() != "div" => Ok(()),
            Some("Bearer user") => Err(RpcError::PermissionDenied {
                message: "only the admin divides".into(),
            }),
            _ => Err(RpcError::Unauthenticated {
                message: "a bearer token is required".into(),
            }),
        }
    })
}

fn with_token(token: &'static str) -> ChannelConfig {
    let mut config = ChannelConfig::default();
    config.interceptor = Some(ClientInterceptor::new(move |_method, metadata| {
        metadata.push(("authorization".into(), format!("Bearer {token}")));
    }));
    config
}

#[tokio::test]
async fn calls_without_credentials_are_refused_before_the_handler_runs() {
    for transport in Transport::ALL {
        let server = TestServer::start(guarded_server(), transport).await;
        let calc = CalculatorClient::new(server.connect().await);
        let error = calc.add(1, 2).await.unwrap_err();
        assert!(
            matches!(&error, RpcError::Unauthenticated { message } if message.contains("bearer")),
            "{transport:?}: {error}"
        );
        // Other services are not guarded, and the connection carries on.
        let probe = ProbeClient::new(calc.channel().clone());
        assert_eq!(probe.echo(vec![1]).await.unwrap(), vec![1]);
    }
}

#[tokio::test]
async fn a_client_interceptor_adds_credentials_to_every_call() {
    for transport in Transport::ALL {
        let server = TestServer::start(guarded_server(), transport).await;
        let user = CalculatorClient::new(server.connect_with(with_token("user")).await);
        assert_eq!(user.add(1, 2).await.unwrap(), 3, "{transport:?}");
        let error = user.div(4, 2).await.unwrap_err();
        assert!(
            matches!(error, RpcError::PermissionDenied { .. }),
            "{transport:?}: {error}"
        );
        let admin = CalculatorClient::new(server.connect_with(with_token("admin")).await);
        assert_eq!(admin.div(4, 2).await.unwrap(), Ok(2), "{transport:?}");
    }
}

#[tokio::test]
async fn a_client_interceptors_debug_output_hides_what_it_adds() {
    let config = with_token("secret-token");
    assert!(!format!("{config:?}").contains("secret-token"));
}

/// Metadata values (credentials) never show in `Debug` output, on either side.
#[tokio::test]
async fn debug_output_of_clients_never_shows_metadata_values() {
    let server = TestServer::start(test_server().0, Transport::Loopback).await;
    let calc = CalculatorClient::new(server.connect().await)
        .with_metadata("authorization", "Bearer very-secret");
    let printed = format!("{calc:?}");
    assert!(printed.contains("authorization"), "{printed}");
    assert!(!printed.contains("very-secret"), "{printed}");
}
