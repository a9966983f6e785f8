// Borrowed arguments are told the owned type to write.
#[rpc_core::service]
pub trait Store {
    async fn put_all(&self, keys: &[String]) -> u64;
    async fn get(&self, key: &str) -> String;
}

fn main() {}
