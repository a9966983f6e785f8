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
pub(crate) mod stub;

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

/// The body of the client's `__rpc_shapes`: each method's shape, traced once from its
/// types (the arguments as they travel, a stream argument by its item; the result, or a
/// stream result's item), with the fingerprint of its spelling as the fallback.
fn shapes_body(model: &ServiceModel) -> TokenStream {
    let codegen = codegen_path(model);
    let entries = model.methods.iter().map(|method| {
        let arg_types = method.params.iter().map(|(ident, ty)| {
            match &method.input_stream {
                Some((stream, item)) if stream == ident => quote!(#item),
                _ => quote!(#ty),
            }
        });
        let arg_names = method
            .params
            .iter()
            .map(|(ident, _)| crate::names::wire_name(ident));
        let result = match &method.output_stream {
            Some(item) => quote!(#item),
            None => {
                let output = &method.output;
                quote!(#output)
            }
        };
        let name = &method.wire_name;
        let fallback = proc_macro2::Literal::u32_suffixed(method.fingerprint);
        quote! {
            #codegen::MethodEntry::new::<(#(#arg_types,)*), #result>(#name, &[#(#arg_names),*], #fallback)
        }
    });
    quote! {
        static __RPC_SHAPES: #codegen::OnceLock<#codegen::ServiceShapes> = #codegen::OnceLock::new();
        __RPC_SHAPES.get_or_init(|| #codegen::ServiceShapes::new([#(#entries),*]))
    }
}
