// Local items named like prelude items do not confuse generated code.
#![allow(dead_code)]

type Result = ();
type Option = ();
type Box = ();
type Vec = ();
type String = ();
struct Send;
struct Future;

#[rpc_core::service]
pub trait Service {
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
