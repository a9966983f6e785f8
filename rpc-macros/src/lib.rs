//! The `#[service]` attribute macro of the rpc toolkit. Use it through `rpc_core::service`;
//! its documentation lives there.
//!
//! The pipeline is parse → validate → model → codegen, one module each:
//!
//! - `args`: the attribute's own arguments (`crate = "path"`, `name = "..."`, `schema`).
//! - `parse`: the trait as syntax, with every piece a later stage may point an error at.
//! - `validate`: the rules, every violation reported at its own span.
//! - `model`: the codegen-ready description; the only place that chooses generated names
//!   and wire ids.
//! - `codegen`: the trait, the client and the server, emitted in that order.

mod args;
mod codegen;
mod model;
mod names;
mod parse;
mod service;
mod validate;

/// Turns a trait into an RPC service. See `rpc_core::service` for the documentation.
#[proc_macro_attribute]
pub fn service(
    args: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    service::expand(args.into(), item.into()).into()
}
