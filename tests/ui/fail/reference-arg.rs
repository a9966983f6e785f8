// Borrowed arguments are shared borrows with elided lifetimes, of unary methods; results
// are owned.
#[rpc_core::service]
pub trait Service {
    async fn rename(&self, name: &mut String) -> String;
    async fn greet(&self, name: &'static str) -> String;
    async fn name(&self) -> &str;
    async fn follow(&self, key: &str) -> rpc_core::Streaming<String>;
}

fn main() {}
