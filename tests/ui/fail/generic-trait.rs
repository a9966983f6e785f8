// Type parameters are fine; lifetime and const parameters are not.
#[rpc_core::service]
pub trait Service<'a, const N: usize> {
    async fn add(&self, a: i64) -> i64;
}

fn main() {}
