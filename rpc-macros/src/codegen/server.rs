//! `{Name}Server<T>`: decodes requests and dispatches them to the user's implementation.

use proc_macro2::TokenStream;
use quote::quote;

use super::{fingerprint_pairs, private_path};
use crate::model::{MethodModel, ServiceModel};

pub(super) fn generate(model: &ServiceModel) -> TokenStream {
    let private = private_path(model);
    let vis = &model.vis;
    let server = &model.server_ident;
    let trait_ident = &model.trait_ident;
    let service_name = &model.wire_name;
    let struct_doc = format!(
        "Serves [`{service_name}`]: add it to a `Server` with `add_service` and every call is dispatched to the wrapped implementation."
    );
    let names = model.methods.iter().map(|method| {
        let id = proc_macro2::Literal::u32_suffixed(method.wire_id);
        let name = &method.wire_name;
        quote!(#id => #private::Option::Some(#name),)
    });
    let arms = model
        .methods
        .iter()
        .map(|method| dispatch_arm(model, method));
    let fingerprints = fingerprint_pairs(model);
    quote! {
        #[doc = #struct_doc]
        #vis struct #server<T> {
            service: #private::Arc<T>,
        }

        impl<T> #server<T> {
            /// Serves `service`.
            #vis fn new(service: T) -> Self {
                #server { service: #private::Arc::new(service) }
            }

            /// Serves an implementation that is shared with other code.
            #vis fn from_arc(service: #private::Arc<T>) -> Self {
                #server { service }
            }

            /// The wrapped implementation.
            #vis fn get_ref(&self) -> &T {
                &self.service
            }
        }

        #[automatically_derived]
        impl<T> #private::Clone for #server<T> {
            fn clone(&self) -> Self {
                #server { service: #private::Clone::clone(&self.service) }
            }
        }

        #[automatically_derived]
        impl<T> #private::Debug for #server<T> {
            fn fmt(&self, f: &mut #private::Formatter<'_>) -> #private::FmtResult {
                f.debug_struct(::core::stringify!(#server)).finish_non_exhaustive()
            }
        }

        #[automatically_derived]
        impl<T> #private::Dispatch for #server<T>
        where
            T: #trait_ident + #private::Send + #private::Sync + 'static,
        {
            fn service_name(&self) -> &'static str {
                #service_name
            }

            fn method_name(&self, method_id: u32) -> #private::Option<&'static str> {
                match method_id {
                    #(#names)*
                    _ => #private::Option::None,
                }
            }

            fn fingerprints(&self) -> &'static [(u32, u32)] {
                &[#(#fingerprints),*]
            }

            fn dispatch(
                &self,
                method_id: u32,
                request: #private::IncomingRequest,
            ) -> #private::Result<#private::HandlerFuture, #private::RpcError> {
                match method_id {
                    #(#arms)*
                    _ => #private::Result::Err(#private::unknown_method(#service_name, method_id)),
                }
            }
        }
    }
}

fn dispatch_arm(model: &ServiceModel, method: &MethodModel) -> TokenStream {
    let private = private_path(model);
    let trait_ident = &model.trait_ident;
    let ident = &method.ident;
    let method_id = proc_macro2::Literal::u32_suffixed(method.wire_id);
    let arg_idents: Vec<_> = method.args.iter().map(|arg| &arg.ident).collect();
    let wire_types = method.args.iter().map(|arg| {
        if arg.is_bytes {
            quote!(#private::ByteBuf)
        } else {
            let ty = &arg.ty;
            quote!(#ty)
        }
    });
    let unwrap_bytes = method.args.iter().filter(|arg| arg.is_bytes).map(|arg| {
        let ident = &arg.ident;
        quote!(let #ident = #ident.0;)
    });
    let context_arg = method.context.as_ref().map(|_| quote!(&__rpc_context,));
    let take_stream = method.input_stream.as_ref().map(|(ident, item)| {
        quote! {
            let mut request = request;
            let #ident = request.take_stream::<#item>();
        }
    });
    // The handler's arguments in the order the user wrote them (the stream among them).
    let call_args = method.params.iter().map(|(ident, _)| ident);
    let encode = if method.output_stream.is_some() {
        quote!(#private::Reply::stream(__rpc_reply))
    } else if method.output_is_bytes {
        quote!(#private::Reply::new(#private::ByteBuf(__rpc_reply)))
    } else {
        quote!(#private::Reply::new(__rpc_reply))
    };
    quote! {
        #method_id => {
            let (#(#arg_idents,)*): (#(#wire_types,)*) = request.decode_args()?;
            #(#unwrap_bytes)*
            #take_stream
            let __rpc_context = request.context;
            let __rpc_service = #private::Clone::clone(&self.service);
            #private::Result::Ok(#private::Box::pin(async move {
                let __rpc_reply = <T as #trait_ident>::#ident(&*__rpc_service, #context_arg #(#call_args),*).await;
                #encode
            }))
        }
    }
}
