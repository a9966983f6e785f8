// Names the generated code uses for itself never collide with the user's: arguments
// named like the dispatcher's parameters and locals, and a user type named like the
// server's generic parameter.
use rpc_core::{service, Context};

#[derive(serde::Serialize, serde::Deserialize)]
pub struct T(u32);

#[service]
pub trait Names {
    async fn request(&self, request: u32, service: u32, method_id: u32) -> u32;
    async fn plain_cx(&self, cx: u32, f: u32, channel: u32, options: u32) -> u32;
    async fn with_context(&self, cx: &Context, request: String, spec: u32) -> String;
    async fn generic_name(&self, t: T, self_: u32) -> T;
}

struct Impl;

impl Names for Impl {
    async fn request(&self, request: u32, service: u32, method_id: u32) -> u32 {
        request + service + method_id
    }
    async fn plain_cx(&self, cx: u32, f: u32, channel: u32, options: u32) -> u32 {
        cx + f + channel + options
    }
    async fn with_context(&self, cx: &Context, request: String, spec: u32) -> String {
        format!("{request} {spec} {}", cx.peer())
    }
    async fn generic_name(&self, t: T, self_: u32) -> T {
        T(t.0 + self_)
    }
}

fn main() {
    let _server = rpc_core::Server::new().add_service(NamesServer::new(Impl));
    let _call = |client: NamesClient| async move {
        let _ = client.request(1, 2, 3).await;
        let _ = client.plain_cx(1, 2, 3, 4).await;
        let _ = client.with_context("x".to_owned(), 2).await;
        let _ = client.generic_name(T(1), 2).await;
    };
}
