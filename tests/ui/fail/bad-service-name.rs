// A service's wire name must be non-empty, of letters, digits, `_`, `-` and `.`, and given once.
#[rpc_core::service(name = "store front/Inventory")]
pub trait Spaced {
    async fn count(&self) -> u64;
}

#[rpc_core::service(name = "")]
pub trait Empty {
    async fn count(&self) -> u64;
}

#[rpc_core::service(name = "a.B", name = "c.D")]
pub trait Twice {
    async fn count(&self) -> u64;
}

fn main() {}
