// `#[service]` goes on a trait.
#[rpc_core::service]
pub struct Service;

fn main() {}
