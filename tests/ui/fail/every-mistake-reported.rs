// Several mistakes are reported together, each at its own span.
#[rpc_core::service]
pub trait Service {
    fn not_async(&self) -> i64;
    async fn no_receiver(a: i64) -> i64;
    async fn generic<T>(&self, a: T) -> i64;
}

fn main() {}
