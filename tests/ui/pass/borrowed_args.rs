// Methods may take `&str`, `&[u8]`, `&[T]` and `&T`; callers pass references.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub owner: String,
}

#[rpc_core::service]
pub trait Store {
    async fn put_all(&self, keys: &[String], data: &[u8]) -> u64;
    async fn get(&self, key: &str, meta: &Meta) -> String;
}

fn main() {
    let _calls = |client: StoreClient| async move {
        let keys = vec!["a".to_owned()];
        let _ = client.put_all(&keys, b"bytes").await;
        let _ = client.get("k", &Meta { owner: "me".to_owned() }).await;
        drop(keys);
    };
}
