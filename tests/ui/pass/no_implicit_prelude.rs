// Generated code names everything by absolute path, so it works without the prelude.
#![no_implicit_prelude]

#[::rpc_core::service]
pub trait Service {
    /// Adds.
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn name(&self, cx: &::rpc_core::Context, prefix: ::std::string::String) -> ::std::string::String;
    async fn bytes(&self, data: ::std::vec::Vec<u8>) -> ::std::vec::Vec<u8>;
    async fn nothing(&self);
}

fn main() {}
