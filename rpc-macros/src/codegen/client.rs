//! `{Name}Client`: one method per trait method, plus per-call options.

use proc_macro2::TokenStream;
use quote::quote;

use super::{fingerprint_pairs, private_path};
use crate::model::{MethodModel, ServiceModel};

pub(super) fn generate(model: &ServiceModel) -> TokenStream {
    let private = private_path(model);
    let vis = &model.vis;
    let client = &model.client_ident;
    let struct_doc = format!(
        "Client of the [`{}`] service: one async method per trait method, each sending a call over a shared `Channel`.",
        model.wire_name
    );
    let methods = model
        .methods
        .iter()
        .map(|method| client_method(model, method));
    let fingerprints = fingerprint_pairs(model);
    quote! {
        #[doc = #struct_doc]
        #vis struct #client {
            channel: #private::Channel,
            options: #private::CallOptions,
        }

        #[automatically_derived]
        impl #private::Clone for #client {
            fn clone(&self) -> Self {
                #client {
                    channel: #private::Clone::clone(&self.channel),
                    options: #private::Clone::clone(&self.options),
                }
            }
        }

        #[automatically_derived]
        impl #private::Debug for #client {
            fn fmt(&self, f: &mut #private::Formatter<'_>) -> #private::FmtResult {
                f.debug_struct(::core::stringify!(#client))
                    .field("channel", &self.channel)
                    .field("options", &self.options)
                    .finish()
            }
        }

        impl #client {
            /// `(method_id, fingerprint)` of every method, declared to the server.
            const FINGERPRINTS: &'static [(u32, u32)] = &[#(#fingerprints),*];

            /// A client that sends its calls over `channel` (which other clients may share).
            #vis fn new(channel: #private::Channel) -> Self {
                #client {
                    channel,
                    options: <#private::CallOptions as #private::Default>::default(),
                }
            }

            /// A copy of this client whose calls each time out `timeout` after they start.
            #vis fn with_timeout(&self, timeout: #private::Duration) -> Self {
                #client {
                    channel: #private::Clone::clone(&self.channel),
                    options: #private::CallOptions::with_timeout(#private::Clone::clone(&self.options), timeout),
                }
            }

            /// A copy of this client whose calls carry the fixed `deadline`.
            #vis fn with_deadline(&self, deadline: #private::Instant) -> Self {
                #client {
                    channel: #private::Clone::clone(&self.channel),
                    options: #private::CallOptions::with_deadline(#private::Clone::clone(&self.options), deadline),
                }
            }

            /// A copy of this client whose calls carry one more metadata pair, which the
            /// handler reads with `Context::metadata`.
            #vis fn with_metadata(
                &self,
                key: impl #private::Into<#private::String>,
                value: impl #private::Into<#private::String>,
            ) -> Self {
                #client {
                    channel: #private::Clone::clone(&self.channel),
                    options: #private::CallOptions::with_metadata(
                        #private::Clone::clone(&self.options),
                        key,
                        value,
                    ),
                }
            }

            /// The channel this client sends its calls over.
            #vis fn channel(&self) -> &#private::Channel {
                &self.channel
            }

            #(#methods)*
        }
    }
}

fn client_method(model: &ServiceModel, method: &MethodModel) -> TokenStream {
    let private = private_path(model);
    let vis = &model.vis;
    let ident = &method.ident;
    let output = &method.output;
    let service_name = &model.wire_name;
    let service_id = proc_macro2::Literal::u32_suffixed(model.wire_id);
    let method_name = &method.wire_name;
    let method_id = proc_macro2::Literal::u32_suffixed(method.wire_id);
    let idempotent = method.idempotent;
    let fingerprint = proc_macro2::Literal::u32_suffixed(method.fingerprint);
    let client = &model.client_ident;
    let docs = if method.docs.is_empty() {
        let doc = format!("Calls `{service_name}.{method_name}` on the server.");
        quote!(#[doc = #doc])
    } else {
        let docs = &method.docs;
        quote!(#(#docs)*)
    };
    let params = method.params.iter().map(|(ident, ty)| quote!(#ident: #ty));
    let encoded_args = method.args.iter().map(|arg| {
        let ident = &arg.ident;
        if arg.is_bytes {
            quote!(#private::ByteSlice(&#ident))
        } else {
            quote!(&#ident)
        }
    });
    let args = quote!(&(#(#encoded_args,)*));
    let call = match (&method.input_stream, &method.output_stream) {
        (input, Some(output_item)) => {
            let (input_item, input) = match input {
                Some((ident, item)) => (quote!(#item), quote!(#private::Option::Some(#ident))),
                None => (quote!(()), quote!(#private::Option::None)),
            };
            quote! {
                __rpc_channel
                    .call_streaming::<_, #input_item, #output_item>(&SPEC, &__rpc_options, #args, #input)
                    .await
            }
        }
        (Some((ident, item)), None) => quote! {
            __rpc_channel
                .call_with_input::<_, #item, #output>(&SPEC, &__rpc_options, #args, #ident)
                .await
        },
        (None, None) if method.output_is_bytes => quote! {
            match __rpc_channel
                .call::<_, #private::ByteBuf>(&SPEC, &__rpc_options, #args)
                .await
            {
                #private::Result::Ok(bytes) => #private::Result::Ok(bytes.0),
                #private::Result::Err(error) => #private::Result::Err(error),
            }
        },
        (None, None) => quote! {
            __rpc_channel
                .call::<_, #output>(&SPEC, &__rpc_options, #args)
                .await
        },
    };
    quote! {
        #docs
        #vis fn #ident(
            &self,
            #(#params),*
        ) -> impl #private::Future<Output = #private::Result<#output, #private::RpcError>>
               + #private::Send
               + 'static
               + use<> {
            const SPEC: #private::MethodSpec = #private::MethodSpec {
                service: #service_name,
                method: #method_name,
                service_id: #service_id,
                method_id: #method_id,
                idempotent: #idempotent,
                fingerprint: #fingerprint,
                service_fingerprints: #client::FINGERPRINTS,
            };
            let __rpc_channel = #private::Clone::clone(&self.channel);
            let __rpc_options = #private::Clone::clone(&self.options);
            async move { #call }
        }
    }
}
