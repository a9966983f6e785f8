// With `#[service(schema)]`, every argument and result type must implement
// `schemars::JsonSchema`: one that does not is reported where it is written.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Order {
    pub item: String,
}

#[rpc_core::service(schema)]
pub trait Shop {
    async fn place(&self, order: Order) -> u64;
}

fn main() {}
