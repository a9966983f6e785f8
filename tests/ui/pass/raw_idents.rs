// Raw identifiers work for the trait, methods and arguments; the wire names drop `r#`.
#![allow(non_camel_case_types)]
#[rpc_core::service]
pub trait r#trait {
    async fn r#await(&self, r#type: i64) -> i64;
}

struct Impl;

impl r#trait for Impl {
    async fn r#await(&self, r#type: i64) -> i64 {
        r#type
    }
}

fn main() {
    let _server = traitServer::new(Impl);
    let _ = rpc_core::codegen::Dispatch::service_name(&_server);
    assert_eq!(rpc_core::codegen::Dispatch::service_name(&_server), "trait");
    let _: fn(rpc_core::Channel) -> traitClient = traitClient::new;
}
