// A type serde cannot carry is reported once, at the method's arguments (or at the result
// or stream item that uses it), naming the missing trait.
pub struct Plain;

#[rpc_core::service]
pub trait Shop {
    async fn buy(&self, item: Plain, quantity: u32) -> u64;
    async fn last(&self) -> Plain;
}

fn main() {}
