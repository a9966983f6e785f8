// The macro works inside a function body.
fn main() {
    #[rpc_core::service]
    trait Local {
        async fn ping(&self) -> u8;
    }

    struct Impl;

    impl Local for Impl {
        async fn ping(&self) -> u8 {
            1
        }
    }

    let _server = LocalServer::new(Impl);
}
