// Client calls are plain `Send + 'static` futures: they can be spawned or timed out, and the
// client can be dropped while they run.
#[rpc_core::service]
pub trait Service {
    async fn ping(&self, n: u32) -> u32;
}

fn assert_spawnable<F: std::future::Future + Send + 'static>(_: F) {}

fn check(client: ServiceClient) {
    let call = client.ping(1);
    drop(client);
    assert_spawnable(call);
}

fn main() {
    let _ = check;
}
