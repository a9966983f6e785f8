// A method is an `async fn` returning its value, not a function returning a future.
#[rpc_core::service]
pub trait Store {
    async fn get(&self, key: String) -> impl std::future::Future<Output = String>;
}

fn main() {}
