//! `{Name}Server<T>`: decodes requests and dispatches them to the user's implementation.

use proc_macro2::TokenStream;
use quote::quote;

use super::generics::Params;
use super::{codegen_path, marker_type};
use crate::model::{Borrow, MethodModel, ServiceModel};

pub(super) fn generate(model: &ServiceModel) -> TokenStream {
    let codegen = codegen_path(model);
    let vis = &model.vis;
    let server = &model.server_ident;
    let trait_ident = &model.trait_ident;
    let service_name = &model.wire_name;
    let struct_doc = format!(
        "Serves [`{trait_ident}`] (`{service_name}` on the wire): add it to a `Server` with `add_service` and every call is dispatched to the wrapped implementation."
    );
    let names = model.methods.iter().map(|method| {
        let id = proc_macro2::Literal::u32_suffixed(method.wire_id);
        let name = &method.wire_name;
        quote!(#id => #codegen::Option::Some(#name),)
    });
    let arms = model
        .methods
        .iter()
        .map(|method| dispatch_arm(model, method));
    let client = &model.client_ident;
    let params = Params::of(&model.item.generics);
    let bare = params.bare();
    let server_args = params.bare_after(&quote!(__RpcImpl));
    let impl_params = params.impl_params(Some(&quote!(__RpcImpl)));
    let where_clause = params.where_clause(&[
        quote!(__RpcImpl: #trait_ident #bare + #codegen::Send + #codegen::Sync + 'static),
    ]);
    let server_type = server_type(&codegen, vis, server, &struct_doc, &params);
    quote! {
        #server_type

        #[automatically_derived]
        impl #impl_params #codegen::Dispatch for #server #server_args
        #where_clause
        {
            fn service_name(&self) -> &'static str {
                #service_name
            }

            fn method_name(&self, __rpc_method_id: u32) -> #codegen::Option<&'static str> {
                match __rpc_method_id {
                    #(#names)*
                    _ => #codegen::Option::None,
                }
            }

            fn shapes(&self) -> #codegen::Option<&'static #codegen::ServiceShapes> {
                #codegen::Option::Some(<#client #bare>::__rpc_shapes())
            }

            fn dispatch(
                &self,
                __rpc_method_id: u32,
                __rpc_request: #codegen::IncomingRequest,
            ) -> #codegen::Result<#codegen::HandlerFuture, #codegen::RpcError> {
                match __rpc_method_id {
                    #(#arms)*
                    _ => #codegen::Result::Err(#codegen::unknown_method(#service_name, __rpc_method_id)),
                }
            }
        }
    }
}

/// The server struct with its constructors, `Clone` and `Debug` (shared with the stubs
/// emitted beside errors). Its first parameter is the implementation; the trait's type
/// parameters follow.
pub(super) fn server_type(
    codegen: &TokenStream,
    vis: &syn::Visibility,
    server: &syn::Ident,
    doc: &str,
    params: &Params,
) -> TokenStream {
    // The implementation's parameter is named like nothing a user writes (a trait may have
    // a parameter `T` of its own).
    let args = params.bare_after(&quote!(__RpcImpl));
    let phantom = params.phantom(codegen);
    quote! {
        #[doc = #doc]
        #vis struct #server #args {
            service: #codegen::Arc<__RpcImpl>,
            types: #phantom,
        }

        impl #args #server #args {
            /// Serves `service`: an implementation, or an `Arc` of one shared with other code
            /// (the trait is implemented for `Arc<T>` of any implementation `T`).
            #vis fn new(service: __RpcImpl) -> Self {
                #server { service: #codegen::Arc::new(service), types: #codegen::PhantomData }
            }

            /// Serves an implementation that is shared with other code.
            #vis fn from_arc(service: #codegen::Arc<__RpcImpl>) -> Self {
                #server { service, types: #codegen::PhantomData }
            }

            /// The wrapped implementation.
            #vis fn get_ref(&self) -> &__RpcImpl {
                &self.service
            }
        }

        #[automatically_derived]
        impl #args #codegen::Clone for #server #args {
            fn clone(&self) -> Self {
                #server {
                    service: #codegen::Clone::clone(&self.service),
                    types: #codegen::PhantomData,
                }
            }
        }

        #[automatically_derived]
        impl #args #codegen::Debug for #server #args {
            fn fmt(&self, f: &mut #codegen::Formatter<'_>) -> #codegen::FmtResult {
                f.debug_struct(#codegen::stringify!(#server)).finish_non_exhaustive()
            }
        }
    }
}

fn dispatch_arm(model: &ServiceModel, method: &MethodModel) -> TokenStream {
    let codegen = codegen_path(model);
    let trait_ident = &model.trait_ident;
    let trait_args = Params::of(&model.item.generics).bare();
    let ident = &method.ident;
    let marker = marker_type(model, method);
    let method_id = proc_macro2::Literal::u32_suffixed(method.wire_id);
    let arg_idents: Vec<_> = method.args.iter().map(|arg| &arg.ident).collect();
    let unwrap_bytes = method.args.iter().filter(|arg| arg.is_bytes).map(|arg| {
        let ident = &arg.ident;
        quote!(let #ident = #ident.0;)
    });
    let context_arg = method.context.as_ref().map(|_| quote!(&__rpc_context,));
    let take_stream = method.input_stream.as_ref().map(|(ident, _)| {
        quote! {
            let mut __rpc_request = __rpc_request;
            let #ident = #codegen::take_stream::<#marker>(&mut __rpc_request);
        }
    });
    // The handler's arguments in the order the user wrote them (the stream among them).
    let call_args = method.params.iter().map(|(ident, _)| ident);
    let encode = if method.output_stream.is_some() {
        quote!(#codegen::reply_stream::<#marker>(__rpc_reply))
    } else if method.output_is_bytes {
        let block = super::block_type(&codegen, method.output_is_shared);
        quote!(#codegen::reply::<#marker>(#block(__rpc_reply)))
    } else {
        quote!(#codegen::reply::<#marker>(__rpc_reply))
    };
    let service_name = &model.wire_name;
    let method_name = &method.wire_name;
    if method.args.iter().any(|arg| arg.borrow != Borrow::Owned) {
        // Borrowed arguments are decoded inside the handler's future, which owns the
        // payload they borrow from: `&str` and `&[u8]` are slices of the received frame.
        let decode_types = method
            .args
            .iter()
            .map(|arg| match (arg.borrow, arg.is_bytes) {
                (Borrow::Slice, true) => quote!(&[u8]),
                (Borrow::Slice, false) => quote!(&str),
                (_, true) => super::block_type(&codegen, arg.is_shared),
                (_, false) => {
                    let ty = &arg.ty;
                    quote!(#ty)
                }
            });
        let unwrap_owned_bytes = method
            .args
            .iter()
            .filter(|arg| arg.is_bytes && arg.borrow != Borrow::Slice)
            .map(|arg| {
                let ident = &arg.ident;
                quote!(let #ident = #ident.0;)
            });
        let pass = method.params.iter().map(|(ident, _)| {
            match method.args.iter().find(|arg| &arg.ident == ident) {
                Some(arg) if arg.borrow == Borrow::Ref => quote!(&#ident),
                _ => quote!(#ident),
            }
        });
        return quote! {
            #method_id => {
                let __rpc_context = __rpc_request.context;
                let __rpc_payload = __rpc_request.payload;
                let __rpc_service = #codegen::Clone::clone(&self.service);
                #codegen::Result::Ok(#codegen::Box::pin(async move {
                    let (#(#arg_idents,)*): (#(#decode_types,)*) =
                        match #codegen::decode_borrowed_args(#service_name, #method_name, &__rpc_payload) {
                            #codegen::Result::Ok(args) => args,
                            #codegen::Result::Err(error) => return #codegen::bad_arguments(&error),
                        };
                    #(#unwrap_owned_bytes)*
                    let __rpc_reply = <__RpcImpl as #trait_ident #trait_args>::#ident(&*__rpc_service, #context_arg #(#pass),*).await;
                    #encode
                }))
            }
        };
    }
    quote! {
        #method_id => {
            let (#(#arg_idents,)*) = #codegen::decode_args::<#marker>(&__rpc_request)?;
            #(#unwrap_bytes)*
            #take_stream
            let __rpc_context = __rpc_request.context;
            let __rpc_service = #codegen::Clone::clone(&self.service);
            #codegen::Result::Ok(#codegen::Box::pin(async move {
                let __rpc_reply = <__RpcImpl as #trait_ident #trait_args>::#ident(&*__rpc_service, #context_arg #(#call_args),*).await;
                #encode
            }))
        }
    }
}
