// After a mistake the trait is still emitted, so code using it reports nothing more:
// the only error below is the missing `async`.
#[rpc_core::service]
pub trait Service {
    fn add(&self, a: i64) -> i64;
}

struct Impl;

impl Service for Impl {
    fn add(&self, a: i64) -> i64 {
        a
    }
}

fn main() {
    let _ = Impl.add(1);
}
