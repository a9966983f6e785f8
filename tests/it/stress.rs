//! Many concurrent calls on one connection, with timeouts and dropped calls mixed in, on a
//! multi-threaded runtime: every call ends, every result is right, and the connection stays
//! healthy. Guards the batching and direct-write paths, which change with timing.

use std::time::Duration;

use rpc_core::RpcError;
use rpc_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_concurrent_calls_all_end_correctly() {
    for transport in Transport::ALL {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let channel = server.connect().await;
        let calc = CalculatorClient::new(channel.clone());
        let probe = ProbeClient::new(channel.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..32_i64 {
            let calc = calc.clone();
            let probe = probe.clone();
            tasks.spawn(async move {
                for round in 0..100_i64 {
                    match (worker + round) % 5 {
                        // Plain calls must return their own result.
                        0 | 1 => assert_eq!(calc.add(worker, round).await.unwrap(), worker + round),
                        // Bytes of varying size, some over the write buffer's high-water mark.
                        2 => {
                            let len = ((worker * 7919 + round * 104_729) % 400_000) as usize;
                            let data = vec![(round % 251) as u8; len];
                            assert_eq!(probe.echo(data.clone()).await.unwrap(), data);
                        }
                        // Calls that time out while their handler sleeps.
                        3 => {
                            let outcome =
                                probe.with_timeout(Duration::from_millis(1)).sleep(50).await;
                            assert!(
                                matches!(outcome, Err(RpcError::DeadlineExceeded { .. })),
                                "{outcome:?}"
                            );
                        }
                        // Calls dropped before they finish.
                        _ => {
                            let dropped =
                                tokio::time::timeout(Duration::from_micros(200), probe.sleep(20))
                                    .await;
                            assert!(dropped.is_err() || dropped.unwrap().is_ok());
                        }
                    }
                }
            });
        }
        let all = async {
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .unwrap_or_else(|_| panic!("{transport:?}: calls hung"));
        assert!(!channel.is_closed(), "{transport:?}");
        assert_eq!(calc.add(1, 1).await.unwrap(), 2, "{transport:?}");
    }
}
