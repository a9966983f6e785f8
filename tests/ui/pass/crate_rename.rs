// `crate = "..."` points generated code at a renamed `rpc_core`.
extern crate rpc_core as renamed;

#[renamed::service(crate = "renamed")]
pub trait Service {
    async fn ping(&self) -> u8;
}

fn main() {}
