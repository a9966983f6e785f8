// A method without `&self` cannot be called on an implementation.
#[rpc_core::service]
pub trait Service {
    async fn add(a: i64, b: i64) -> i64;
}

fn main() {}
