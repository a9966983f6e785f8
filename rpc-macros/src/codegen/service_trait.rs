//! The trait as the user wrote it, with each `async fn` turned into a `fn` returning a `Send`
//! future, so handlers can run on a multi-threaded runtime. Implementations still use plain
//! `async fn`.
//!
//! Unless the trait has supertraits, it is also implemented for `Arc<T>` of any
//! implementation `T`, so that `{Name}Server::new` takes an implementation shared with other
//! code as readily as one of its own.

use proc_macro2::TokenStream;
use quote::quote;

use super::codegen_path;
use super::generics::Params;
use crate::model::ServiceModel;

pub(super) fn generate(model: &ServiceModel) -> TokenStream {
    let codegen = codegen_path(model);
    let syn::ItemTrait {
        attrs,
        vis,
        trait_token,
        ident,
        generics,
        colon_token,
        supertraits,
        ..
    } = &model.item;
    let where_clause = &generics.where_clause;
    let params = Params::of(generics);
    let trait_args = params.bare();
    let signatures: Vec<syn::Signature> = model
        .methods
        .iter()
        .map(|method| {
            let mut sig = method.sig.clone();
            sig.asyncness = None;
            let output = &method.output;
            sig.output = syn::parse_quote! {
                -> impl #codegen::Future<Output = #output> + #codegen::Send
            };
            sig
        })
        .collect();
    let methods = model.methods.iter().zip(&signatures).map(|(method, sig)| {
        let attrs = &method.attrs;
        quote! {
            #(#attrs)*
            #sig;
        }
    });
    let for_arc = supertraits.is_empty().then(|| {
        let forwards = model.methods.iter().zip(&signatures).map(|(method, sig)| {
            let name = &method.ident;
            let context = method.context.as_ref().map(|(ident, _)| quote!(#ident,));
            let params = method.params.iter().map(|(ident, _)| ident);
            quote! {
                #sig {
                    <__RpcImpl as #ident #trait_args>::#name(&**self, #context #(#params),*)
                }
            }
        });
        let impl_params = params.impl_params(Some(&quote!(__RpcImpl)));
        let where_clause = params.where_clause(&[quote!(__RpcImpl: #ident #trait_args)]);
        quote! {
            /// An implementation shared behind an `Arc` serves as well as the implementation.
            #[automatically_derived]
            // Forwarders repeat the user's signatures; lints about them belong to the trait.
            #[allow(clippy::all)]
            impl #impl_params #ident #trait_args for #codegen::Arc<__RpcImpl>
            #where_clause
            {
                #(#forwards)*
            }
        }
    });
    quote! {
        #(#attrs)*
        #vis #trait_token #ident #generics #colon_token #supertraits #where_clause {
            #(#methods)*
        }

        #for_arc
    }
}
