// An attribute that looks like `#[idempotent]` is named as the likely typo.
#[rpc_core::service]
pub trait Store {
    #[idempotnet]
    async fn get(&self, key: String) -> Option<String>;
}

fn main() {}
