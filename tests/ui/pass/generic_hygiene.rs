// A trait's type parameter may be named `T` (or like anything the macro uses).
#[rpc_core::service]
pub trait Echo<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    async fn echo(&self, value: T, request: u32) -> T;
}

struct Impl;

impl Echo<String> for Impl {
    async fn echo(&self, value: String, _request: u32) -> String {
        value
    }
}

fn main() {
    let _server = rpc_core::Server::new().add_service(EchoServer::new(Impl));
    let _call = |client: EchoClient<String>| async move {
        let _ = client.echo("hi".to_owned(), 1).await;
    };
}
