// Arguments are decoded on the server into owned values.
#[rpc_core::service]
pub trait Service {
    async fn greet(&self, name: &str) -> String;
}

fn main() {}
