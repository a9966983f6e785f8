// The generated client has its own `new`; a method cannot share the name.
#[rpc_core::service]
pub trait Service {
    async fn new(&self) -> i64;
}

fn main() {}
