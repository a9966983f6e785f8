// A mistake in the trait is reported once, at the mistake: the client and server types
// still exist, so code that uses them adds no errors of its own.
#[rpc_core::service]
pub trait Orders {
    fn count(&self) -> u64;
    async fn place(&self, item: String, quantity: u32) -> u64;
}

struct Impl;

impl Orders for Impl {
    fn count(&self) -> u64 {
        0
    }
    async fn place(&self, _item: String, quantity: u32) -> u64 {
        u64::from(quantity)
    }
}

async fn use_it(channel: rpc_core::Channel) {
    let client = OrdersClient::new(channel).with_timeout(std::time::Duration::from_secs(1));
    let _ = client.place("tea".to_owned(), 2).await;
    let _ = client.count().await;
    let _server = rpc_core::Server::new().add_service(OrdersServer::new(Impl));
}

fn main() {
    let _ = use_it;
}
