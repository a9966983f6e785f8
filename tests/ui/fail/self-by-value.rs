// Handlers are shared between concurrent calls, so they cannot consume `self`.
#[rpc_core::service]
pub trait Service {
    async fn add(self, a: i64) -> i64;
}

fn main() {}
