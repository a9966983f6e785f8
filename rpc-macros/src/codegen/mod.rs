//! Emits the generated items in reading order: the trait, the client, the server.
//!
//! Generated code names the runtime and the standard library only through
//! `#krate::codegen`, so it works under `#![no_implicit_prelude]` and whatever the user's
//! crate shadows. Every name it introduces beside the user's (locals, constants, generic
//! parameters) starts with `__rpc`/`__Rpc`/`__RPC`, so no argument or type name of the
//! user's can collide with one.

mod client;
mod server;
mod service_trait;

use proc_macro2::TokenStream;
use quote::quote;

use crate::model::ServiceModel;

pub(crate) fn generate(model: &ServiceModel) -> TokenStream {
    let service_trait = service_trait::generate(model);
    let client = client::generate(model);
    let server = server::generate(model);
    quote! {
        #service_trait
        #client
        #server
    }
}

/// `#krate::codegen`, the one path generated code reaches the runtime through.
fn codegen_path(model: &ServiceModel) -> TokenStream {
    let krate = &model.krate;
    quote!(#krate::codegen)
}

/// `(method_id, fingerprint)` of every method, as tuple expressions: the table the client
/// declares and the server compares it with.
fn fingerprint_pairs(model: &ServiceModel) -> Vec<TokenStream> {
    model
        .methods
        .iter()
        .map(|method| {
            let id = proc_macro2::Literal::u32_suffixed(method.wire_id);
            let fingerprint = proc_macro2::Literal::u32_suffixed(method.fingerprint);
            quote!((#id, #fingerprint))
        })
        .collect()
}
