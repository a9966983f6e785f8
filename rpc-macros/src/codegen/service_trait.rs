//! The trait as the user wrote it, with each `async fn` turned into a `fn` returning a `Send`
//! future, so handlers can run on a multi-threaded runtime. Implementations still use plain
//! `async fn`.

use proc_macro2::TokenStream;
use quote::quote;

use super::codegen_path;
use crate::model::ServiceModel;

pub(super) fn generate(model: &ServiceModel) -> TokenStream {
    let codegen = codegen_path(model);
    let syn::ItemTrait {
        attrs,
        vis,
        trait_token,
        ident,
        colon_token,
        supertraits,
        ..
    } = &model.item;
    let methods = model.methods.iter().map(|method| {
        let attrs = &method.attrs;
        let mut sig = method.sig.clone();
        sig.asyncness = None;
        let output = &method.output;
        sig.output = syn::parse_quote! {
            -> impl #codegen::Future<Output = #output> + #codegen::Send
        };
        quote! {
            #(#attrs)*
            #sig;
        }
    });
    quote! {
        #(#attrs)*
        #vis #trait_token #ident #colon_token #supertraits {
            #(#methods)*
        }
    }
}
