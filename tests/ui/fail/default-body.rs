// Implementations live in `impl` blocks; the service trait only declares methods.
#[rpc_core::service]
pub trait Service {
    async fn add(&self, a: i64) -> i64 {
        a
    }
}

fn main() {}
