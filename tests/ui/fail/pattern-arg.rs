// Arguments need plain names: they become fields of the request.
#[rpc_core::service]
pub trait Service {
    async fn add(&self, (a, b): (i64, i64)) -> i64;
}

fn main() {}
