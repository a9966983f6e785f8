//! What `#[service]` emits beside its errors: `{Name}Client` and `{Name}Server<T>` with
//! every method it could read, so that a mistake in the trait is reported once, at the
//! mistake, and not again as "cannot find type `{Name}Client`" or "no method" wherever the
//! service is used. The stubs never run: the errors beside them stop the build.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::client::{client_type, ClientNames};
use super::generics::Params;
use super::server::server_type;
use crate::names::suffixed;
use crate::parse::{ArgKind, Service};
use crate::validate::CLIENT_METHODS;

pub(crate) fn generate(service: &Service<'_>, krate: &syn::Path) -> TokenStream {
    let codegen = quote!(#krate::codegen);
    let item = service.original;
    let vis = &item.vis;
    let trait_ident = &item.ident;
    let client = suffixed(trait_ident, "Client");
    let server = suffixed(trait_ident, "Server");
    let use_list = Params::of(&item.generics).use_list();
    // Each name once, and none of the client's own: those are errors reported already.
    let mut seen = std::collections::HashSet::new();
    let methods: Vec<TokenStream> = service
        .methods
        .iter()
        .filter(|method| {
            let name = method.ident.to_string();
            // `impl Trait` arguments would make the stub generic: leave such methods out.
            let plain = !method
                .args
                .iter()
                .any(|arg| matches!(arg.ty, syn::Type::ImplTrait(_)));
            plain && !CLIENT_METHODS.contains(&name.as_str()) && seen.insert(name)
        })
        .map(|method| {
            let ident = method.ident;
            let params: Vec<(syn::Ident, &syn::Type)> = method
                .args
                .iter()
                .enumerate()
                .filter(|(_, arg)| {
                    !matches!(arg.kind, ArgKind::ContextRef | ArgKind::ContextMisused)
                })
                .map(|(index, arg)| {
                    let name = arg
                        .ident
                        .cloned()
                        .unwrap_or_else(|| format_ident!("__rpc_arg{index}"));
                    (name, arg.ty)
                })
                .collect();
            // An `impl Trait` or borrowed result (a mistake reported already) stands as `()`.
            let unit: syn::Type = syn::parse_quote!(());
            let output = match method.output {
                Some(syn::Type::ImplTrait(_) | syn::Type::Reference(_)) | None => &unit,
                Some(output) => output,
            };
            let names = params.iter().map(|(name, _)| name);
            let params = params.iter().map(|(name, ty)| quote!(#name: #ty));
            quote! {
                #vis fn #ident(
                    &self,
                    #(#params),*
                ) -> impl #codegen::Future<Output = #codegen::Result<#output, #codegen::RpcError>>
                       + #codegen::Send
                       + 'static
                       + #use_list {
                    let _ = (#(#names,)*);
                    async { #codegen::stubbed() }
                }
            }
        })
        .collect();
    let params = Params::of(&item.generics);
    let names = ClientNames {
        codegen: &codegen,
        vis,
        client: &client,
        trait_ident,
        wire_name: &trait_ident.to_string(),
        params: &params,
    };
    let client_type = client_type(&names, &[], &methods);
    let server_type = server_type(
        &codegen,
        vis,
        &server,
        "Serves the service (a stub: see the errors of `#[service]`).",
        &params,
    );
    let server_args = params.bare_after(&quote!(__RpcImpl));
    let impl_params = params.impl_params(Some(&quote!(__RpcImpl)));
    let where_clause =
        params.where_clause(&[quote!(__RpcImpl: #codegen::Send + #codegen::Sync + 'static)]);
    quote! {
        #client_type

        #server_type

        impl #impl_params #codegen::Dispatch for #server #server_args
        #where_clause
        {
            fn service_name(&self) -> &'static str {
                #codegen::stringify!(#trait_ident)
            }

            fn method_name(&self, __rpc_method_id: u32) -> #codegen::Option<&'static str> {
                #codegen::Option::None
            }

            fn dispatch(
                &self,
                __rpc_method_id: u32,
                __rpc_request: #codegen::IncomingRequest,
            ) -> #codegen::Result<#codegen::HandlerFuture, #codegen::RpcError> {
                #codegen::Result::Err(#codegen::unknown_method(
                    #codegen::stringify!(#trait_ident),
                    __rpc_method_id,
                ))
            }
        }
    }
}
