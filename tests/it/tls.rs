//! TLS and mutual TLS over TCP, with certificates made by the test (rcgen): calls work, the
//! handler sees the verified client certificate, untrusted peers are refused, and stalled or
//! failed handshakes never hold up the listener (catalogue rows 34 and 35).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rpc_core::{Context, Peer, RpcError, Server, service};
use rpc_tests::*;
use rpc_transport::tls::{self, TlsListener, rustls};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A certificate and its private key.
struct Identity {
    certificate: CertificateDer<'static>,
    key: KeyPair,
}

impl Identity {
    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.serialize_der()).into()
    }
}

/// A certificate authority that issues server and client certificates.
struct TestPki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl TestPki {
    fn new(name: &str) -> TestPki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params.self_signed(&ca_key).unwrap();
        TestPki { ca, ca_key }
    }

    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let certificate = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Identity {
            certificate: certificate.der().clone(),
            key,
        }
    }

    fn roots(&self) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        Arc::new(roots)
    }

    /// A server for "localhost"; with `require_client_certificates`, mutual TLS.
    fn server_config(&self, require_client_certificates: bool) -> Arc<rustls::ServerConfig> {
        let server = self.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
        let builder = rustls::ServerConfig::builder();
        let builder = if require_client_certificates {
            let verifier = rustls::server::WebPkiClientVerifier::builder(self.roots())
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(vec![server.certificate.clone()], server.private_key())
            .unwrap();
        Arc::new(config)
    }

    /// A client trusting this authority, presenting `identity` if given.
    fn client_config(&self, identity: Option<&Identity>) -> Arc<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder().with_root_certificates(self.roots());
        let config = match identity {
            Some(identity) => builder
                .with_client_auth_cert(vec![identity.certificate.clone()], identity.private_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }
}

/// A service that reports who the server thinks is calling.
#[service]
trait WhoAmI {
    /// The leaf certificate the caller presented (DER), if any.
    async fn certificate(&self, cx: &Context) -> Option<Vec<u8>>;
    /// The block it is given.
    async fn echo(&self, block: rpc_core::Bytes) -> rpc_core::Bytes;
}

struct WhoAmIImpl;

impl WhoAmI for WhoAmIImpl {
    async fn certificate(&self, cx: &Context) -> Option<Vec<u8>> {
        match cx.peer() {
            Peer::Tls { certificates, .. } => certificates.first().cloned(),
            _ => None,
        }
    }

    async fn echo(&self, block: rpc_core::Bytes) -> rpc_core::Bytes {
        block
    }
}

/// Serves `WhoAmI` over TLS on a free port; returns the address.
async fn serve_tls(listener: TlsListener) -> std::net::SocketAddr {
    let address = listener.local_addr().unwrap();
    let server = Server::new().add_service(WhoAmIServer::new(WhoAmIImpl));
    tokio::spawn(rpc_transport::serve(listener, server));
    address
}

async fn bind(config: Arc<rustls::ServerConfig>) -> TlsListener {
    TlsListener::bind("127.0.0.1:0", config).await.unwrap()
}

/// A channel over plain TLS (no client certificate) to a new `WhoAmI` server.
async fn plain_tls_channel() -> rpc_core::Channel {
    let pki = TestPki::new("test ca");
    let address = serve_tls(bind(pki.server_config(false)).await).await;
    tls::connect(address, "localhost", pki.client_config(None))
        .await
        .unwrap()
}

#[tokio::test]
async fn with_mutual_tls_the_handler_sees_the_verified_client_certificate() {
    let pki = TestPki::new("test ca");
    let address = serve_tls(bind(pki.server_config(true)).await).await;
    let alice = pki.issue("alice", ExtendedKeyUsagePurpose::ClientAuth);
    let channel = tls::connect(address, "localhost", pki.client_config(Some(&alice)))
        .await
        .unwrap();
    let client = WhoAmIClient::new(channel);
    let seen = client.certificate().await.unwrap();
    assert_eq!(seen.as_deref(), Some(alice.certificate.as_ref()));
}

#[tokio::test]
async fn plain_tls_carries_calls_without_client_certificates() {
    let channel = plain_tls_channel().await;
    assert!(
        matches!(channel.peer(), Peer::Tls { certificates, .. } if !certificates.is_empty()),
        "the client sees the server's chain"
    );
    let client = WhoAmIClient::new(channel);
    assert_eq!(client.certificate().await.unwrap(), None);
}

#[tokio::test]
async fn large_bytes_blocks_sent_beside_their_frames_arrive_whole_over_tls() {
    let channel = plain_tls_channel().await;
    let client = WhoAmIClient::new(channel);
    // Sizes around the block threshold and well past it; sent together, so that batches
    // carry several blocks.
    let blocks: Vec<rpc_core::Bytes> = [16 * 1024 - 1, 16 * 1024, 100_000, 1 << 20]
        .into_iter()
        .enumerate()
        .map(|(n, len)| {
            (0..len)
                .map(|i| (i * 7 + n) as u8)
                .collect::<Vec<u8>>()
                .into()
        })
        .collect();
    let echoes = blocks.iter().map(|block| client.echo(block.clone()));
    let back = futures_util::future::join_all(echoes).await;
    for (block, back) in blocks.iter().zip(back) {
        assert_eq!(&back.unwrap(), block, "a block of {} bytes", block.len());
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_server_fails_with_unauthenticated() {
    let pki = TestPki::new("test ca");
    let stranger = TestPki::new("another ca");
    let address = serve_tls(bind(pki.server_config(false)).await).await;
    let error = tls::connect(address, "localhost", stranger.client_config(None))
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::Unauthenticated { .. }), "{error}");
    // The name must match too.
    let error = tls::connect(address, "elsewhere", pki.client_config(None))
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::Unauthenticated { .. }), "{error}");
}

#[tokio::test]
async fn a_mutual_tls_server_refuses_clients_without_a_trusted_certificate() {
    let pki = TestPki::new("test ca");
    let stranger = TestPki::new("another ca");
    let address = serve_tls(bind(pki.server_config(true)).await).await;
    let mallory = stranger.issue("mallory", ExtendedKeyUsagePurpose::ClientAuth);
    for identity in [None, Some(&mallory)] {
        // With TLS 1.3 the client finishes its side of the handshake before the server has
        // judged its certificate, so the refusal may surface on the first call instead; it
        // is named a refusal either way.
        let outcome = async {
            let channel = tls::connect(address, "localhost", pki.client_config(identity)).await?;
            WhoAmIClient::new(channel).certificate().await
        };
        let outcome = tokio::time::timeout(Duration::from_secs(5), outcome)
            .await
            .expect("refused promptly");
        match outcome {
            Err(RpcError::Unauthenticated { .. }) => {}
            Err(other) => panic!("refused as {other:?}, not as Unauthenticated"),
            Ok(_) => panic!("a client without a trusted certificate got in"),
        }
    }
    let alice = pki.issue("alice", ExtendedKeyUsagePurpose::ClientAuth);
    let channel = tls::connect(address, "localhost", pki.client_config(Some(&alice)))
        .await
        .unwrap();
    assert!(
        WhoAmIClient::new(channel)
            .certificate()
            .await
            .unwrap()
            .is_some()
    );
}

/// Catalogue row 34: clients that open a socket and never send a ClientHello, or trickle
/// one a byte at a time, each cost a task until the handshake timeout; a well-behaved
/// client is served meanwhile, and the stalled sockets are closed at the timeout.
#[tokio::test]
async fn stalled_handshakes_neither_block_the_listener_nor_outlive_their_timeout() {
    let pki = TestPki::new("test ca");
    let listener = bind(pki.server_config(false))
        .await
        .handshake_timeout(Duration::from_millis(300));
    let address = serve_tls(listener).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    let mut trickler = tokio::net::TcpStream::connect(address).await.unwrap();
    trickler.write_all(&[0x16]).await.unwrap();

    let started = Instant::now();
    let channel = tls::connect(address, "localhost", pki.client_config(None))
        .await
        .unwrap();
    WhoAmIClient::new(channel).certificate().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "served while others stall"
    );

    for mut stalled in silent.into_iter().chain([trickler]) {
        let mut byte = [0_u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), stalled.read(&mut byte))
            .await
            .expect("closed at the handshake timeout");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }
}

/// More stalled sockets than `max_handshakes`, under a handshake timeout far longer than
/// the test: each new connection sheds the oldest stalled handshake instead of waiting for
/// one to end, so a well-behaved client is served at once and the shed sockets are closed.
#[tokio::test]
async fn stalled_handshakes_past_the_cap_are_shed_oldest_first() {
    let pki = TestPki::new("test ca");
    let listener = bind(pki.server_config(false))
        .await
        .handshake_timeout(Duration::from_secs(60))
        .max_handshakes(4);
    let address = serve_tls(listener).await;
    let mut silent = Vec::new();
    for _ in 0..12 {
        silent.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    let served = async {
        let channel = tls::connect(address, "localhost", pki.client_config(None)).await?;
        WhoAmIClient::new(channel).certificate().await
    };
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("served while more sockets than the cap stall")
        .unwrap();
    // The oldest were shed to make room: their sockets are closed long before the timeout.
    for mut stalled in silent.into_iter().take(8) {
        let mut byte = [0_u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut byte))
            .await
            .expect("a shed handshake's socket is closed");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }
}

/// Catalogue row 35: handshakes that fail (garbage instead of a ClientHello, plaintext
/// RPC on a TLS port) are logged and dropped without slowing the listener for others.
#[tokio::test]
async fn failed_handshakes_do_not_throttle_the_listener() {
    let pki = TestPki::new("test ca");
    let address = serve_tls(bind(pki.server_config(false)).await).await;
    for attempt in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let garbage: &[u8] = if attempt % 2 == 0 {
            b"GET / HTTP/1.1\r\n\r\n"
        } else {
            &rpc_core::wire::PREFACE
        };
        stream.write_all(garbage).await.unwrap();
        let closed = read_until_closed(&mut stream, Duration::from_secs(2)).await;
        assert!(closed.len() < 1024, "at most a TLS alert comes back");
    }
    let started = Instant::now();
    let channel = tls::connect(address, "localhost", pki.client_config(None))
        .await
        .unwrap();
    WhoAmIClient::new(channel).certificate().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
}

/// A plaintext client on a TLS port gets a prompt error, not a hang.
#[tokio::test]
async fn a_plaintext_client_on_a_tls_port_fails_promptly() {
    let pki = TestPki::new("test ca");
    let address = serve_tls(bind(pki.server_config(false)).await).await;
    let channel = rpc_transport::tcp::connect(address).await.unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(5),
        WhoAmIClient::new(channel).certificate(),
    )
    .await
    .expect("no hang");
    assert!(outcome.is_err());
}

/// The HTTP/JSON front door over TLS: a client that offers `h2` by ALPN gets HTTP/2, and the
/// handler sees its verified certificate, as over the binary protocol.
#[tokio::test]
async fn http_over_tls_speaks_h2_by_alpn_and_the_handler_sees_the_client_certificate() {
    use http_body_util::{BodyExt, Full};
    let pki = TestPki::new("test ca");
    let mut server_config = (*pki.server_config(true)).clone();
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = bind(Arc::new(server_config)).await;
    let address = listener.local_addr().unwrap();
    let server = Server::new().add_service(WhoAmIServer::new(WhoAmIImpl));
    tokio::spawn(rpc_http::serve(listener, server));

    let alice = pki.issue("alice", ExtendedKeyUsagePurpose::ClientAuth);
    let mut client_config = (*pki.client_config(Some(&alice))).clone();
    client_config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!(
        "https://localhost:{}/WhoAmI/certificate",
        address.port()
    ))
    .header("content-type", "application/json")
    .body(Full::new(bytes::Bytes::from_static(b"{}")))
    .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let seen: Option<Vec<u8>> = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen.as_deref(), Some(alice.certificate.as_ref()));
}

#[tokio::test]
async fn calls_travel_both_ways_over_tls() {
    use crate::both_ways::{NamedWorker, callbacks_and_pushes_work, coordinator_server, serving};
    let pki = TestPki::new("test ca");
    let listener = bind(pki.server_config(false)).await;
    let address = listener.local_addr().unwrap();
    let (server, hub) = coordinator_server(rpc_core::ServerConfig::default());
    tokio::spawn(rpc_transport::serve(listener, server));
    let worker = NamedWorker::new("w1");
    let channel = tls::connect_with(
        address,
        "localhost",
        pki.client_config(None),
        serving(&worker),
    )
    .await
    .unwrap();
    callbacks_and_pushes_work(channel, &worker, &hub, "tls").await;
}
