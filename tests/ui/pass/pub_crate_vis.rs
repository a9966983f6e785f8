// Generated items take the trait's visibility.
mod inner {
    #[rpc_core::service]
    pub(crate) trait Service {
        async fn ping(&self) -> u8;
    }
}

struct Impl;

impl inner::Service for Impl {
    async fn ping(&self) -> u8 {
        1
    }
}

fn main() {
    let _server = inner::ServiceServer::new(Impl);
    let _: fn(rpc_core::Channel) -> inner::ServiceClient = inner::ServiceClient::new;
}
