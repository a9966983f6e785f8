//! Emits the generated items in reading order: the trait, the client, the server.
//!
//! Generated code names the runtime only through `#krate::__private`, and the standard
//! library only through it or absolute paths, so it works under `#![no_implicit_prelude]`.

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

/// `#krate::__private`, the one path generated code reaches the runtime through.
fn private_path(model: &ServiceModel) -> TokenStream {
    let krate = &model.krate;
    quote!(#krate::__private)
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
