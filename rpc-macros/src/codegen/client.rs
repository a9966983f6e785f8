//! `{Name}Client`: one method per trait method, plus per-call options.

use proc_macro2::TokenStream;
use quote::quote;

use super::generics::Params;
use super::{codegen_path, marker_type, shapes_body};
use crate::model::{Borrow, MethodModel, ServiceModel};

pub(super) fn generate(model: &ServiceModel) -> TokenStream {
    let codegen = codegen_path(model);
    let methods: Vec<TokenStream> = model
        .methods
        .iter()
        .map(|method| client_method(model, method))
        .collect();
    let shapes = shapes_body(model);
    let shapes_fn = quote! {
        /// The shapes of the service's methods, computed on first use.
        fn __rpc_shapes() -> &'static #codegen::ServiceShapes {
            #shapes
        }
    };
    let params = Params::of(&model.item.generics);
    let names = ClientNames {
        codegen: &codegen,
        vis: &model.vis,
        client: &model.client_ident,
        trait_ident: &model.trait_ident,
        wire_name: &model.wire_name,
        params: &params,
    };
    client_type(&names, &[shapes_fn], &methods)
}

/// What the client type is called and where it lives.
pub(super) struct ClientNames<'a> {
    pub(super) codegen: &'a TokenStream,
    pub(super) vis: &'a syn::Visibility,
    pub(super) client: &'a syn::Ident,
    pub(super) trait_ident: &'a syn::Ident,
    pub(super) wire_name: &'a str,
    pub(super) params: &'a Params,
}

/// The client struct, its `Clone` and `Debug`, its constructor and per-call options, and
/// `items` and `methods` in its inherent impl.
pub(super) fn client_type(
    names: &ClientNames<'_>,
    items: &[TokenStream],
    methods: &[TokenStream],
) -> TokenStream {
    let ClientNames {
        codegen,
        vis,
        client,
        trait_ident,
        wire_name,
        params,
    } = names;
    let bare = params.bare();
    let phantom = params.phantom(codegen);
    let impl_params = params.impl_params(None);
    let where_clause = params.where_clause(&[]);
    let struct_doc = format!(
        "Client of the [`{trait_ident}`] service (`{wire_name}` on the wire): one async method per trait method, each sending a call over a shared `Channel`."
    );
    quote! {
        #[doc = #struct_doc]
        #vis struct #client #bare {
            channel: #codegen::Channel,
            options: #codegen::CallOptions,
            types: #phantom,
        }

        #[automatically_derived]
        impl #bare #codegen::Clone for #client #bare {
            fn clone(&self) -> Self {
                #client {
                    channel: #codegen::Clone::clone(&self.channel),
                    options: #codegen::Clone::clone(&self.options),
                    types: #codegen::PhantomData,
                }
            }
        }

        #[automatically_derived]
        impl #bare #codegen::Debug for #client #bare {
            fn fmt(&self, f: &mut #codegen::Formatter<'_>) -> #codegen::FmtResult {
                f.debug_struct(#codegen::stringify!(#client))
                    .field("channel", &self.channel)
                    .field("options", &self.options)
                    .finish()
            }
        }

        // The methods repeat the trait's signatures; lints about them belong to the trait.
        #[allow(clippy::all)]
        impl #impl_params #client #bare #where_clause {
            #(#items)*

            /// A client that sends its calls over `channel` (which other clients may share).
            #vis fn new(channel: #codegen::Channel) -> Self {
                #client {
                    channel,
                    options: <#codegen::CallOptions as #codegen::Default>::default(),
                    types: #codegen::PhantomData,
                }
            }

            /// A copy of this client whose calls each time out `timeout` after they start.
            #vis fn with_timeout(&self, timeout: #codegen::Duration) -> Self {
                #client {
                    channel: #codegen::Clone::clone(&self.channel),
                    options: #codegen::CallOptions::with_timeout(#codegen::Clone::clone(&self.options), timeout),
                    types: #codegen::PhantomData,
                }
            }

            /// A copy of this client whose calls carry the fixed `deadline`.
            #vis fn with_deadline(&self, deadline: #codegen::Instant) -> Self {
                #client {
                    channel: #codegen::Clone::clone(&self.channel),
                    options: #codegen::CallOptions::with_deadline(#codegen::Clone::clone(&self.options), deadline),
                    types: #codegen::PhantomData,
                }
            }

            /// A copy of this client whose calls carry one more metadata pair, which the
            /// handler reads with `Context::metadata`.
            #vis fn with_metadata(
                &self,
                key: impl #codegen::Into<#codegen::String>,
                value: impl #codegen::Into<#codegen::String>,
            ) -> Self {
                #client {
                    channel: #codegen::Clone::clone(&self.channel),
                    options: #codegen::CallOptions::with_metadata(
                        #codegen::Clone::clone(&self.options),
                        key,
                        value,
                    ),
                    types: #codegen::PhantomData,
                }
            }

            /// The channel this client sends its calls over.
            #vis fn channel(&self) -> &#codegen::Channel {
                &self.channel
            }

            #(#methods)*
        }
    }
}

fn client_method(model: &ServiceModel, method: &MethodModel) -> TokenStream {
    let codegen = codegen_path(model);
    let vis = &model.vis;
    let ident = &method.ident;
    let output = &method.output;
    let service_name = &model.wire_name;
    let method_name = &method.wire_name;
    let idempotent = method.idempotent.then(|| quote!(.idempotent()));
    let sharing_bytes = method.output_is_shared.then(|| quote!(.sharing_bytes()));
    let client = &model.client_ident;
    let docs = if method.docs.is_empty() {
        let doc = format!("Calls `{service_name}.{method_name}` on the server.");
        quote!(#[doc = #doc])
    } else {
        let docs = &method.docs;
        quote!(#(#docs)*)
    };
    let params = method.params.iter().map(|(ident, ty)| quote!(#ident: #ty));
    let marker = marker_type(model, method);
    let type_params = Params::of(&model.item.generics);
    let bare = type_params.bare();
    let use_list = type_params.use_list();
    // A non-generic method's spec is a constant; a generic one's is made once per
    // instantiation (a constant cannot name the impl's type parameters).
    let spec = if model.item.generics.params.is_empty() {
        quote! {
            const __RPC_SPEC: #codegen::MethodSpec =
                #codegen::MethodSpec::new(#service_name, #method_name)
                    #idempotent
                    #sharing_bytes
                    .with_shapes(#client::__rpc_shapes);
            let __rpc_spec = &__RPC_SPEC;
        }
    } else {
        quote! {
            let __rpc_spec = #codegen::cached::<#marker, _>(|| {
                #codegen::MethodSpec::new(#service_name, #method_name)
                    #idempotent
                    #sharing_bytes
                    .with_shapes(<#client #bare>::__rpc_shapes)
            });
        }
    };
    let wire_args = method.args.iter().map(|arg| {
        let ident = &arg.ident;
        if arg.is_bytes {
            let block = super::block_type(&codegen, arg.is_shared);
            quote!(#block(#ident))
        } else {
            quote!(#ident)
        }
    });
    let args = quote!((#(#wire_args,)*));
    // Borrowed arguments are encoded before the future starts, so that it owns nothing
    // borrowed: a tuple of references encodes as the tuple of owned values would.
    let borrows = method.args.iter().any(|arg| arg.borrow != Borrow::Owned);
    let encoded_args = method.args.iter().map(|arg| {
        let ident = &arg.ident;
        match (arg.borrow, arg.is_bytes) {
            (Borrow::Owned, true) => quote!(#codegen::ByteSlice(&#ident)),
            (Borrow::Owned, false) => quote!(&#ident),
            (_, true) => quote!(#codegen::ByteSlice(#ident)),
            (_, false) => quote!(#ident),
        }
    });
    let unary = if borrows {
        quote! {
            #codegen::call_encoded::<#marker>(
                __rpc_channel,
                __rpc_spec,
                __rpc_options,
                #codegen::encode_args(&(#(#encoded_args,)*)),
            )
        }
    } else {
        quote!(#codegen::call_unary::<#marker>(__rpc_channel, __rpc_spec, __rpc_options, #args))
    };
    let call = match (&method.input_stream, &method.output_stream) {
        (input, Some(_)) => {
            let input = match input {
                Some((ident, _)) => quote!(#codegen::Option::Some(#ident)),
                None => quote!(#codegen::Option::None),
            };
            quote! {
                #codegen::call_streaming::<#marker>(__rpc_channel, __rpc_spec, __rpc_options, #args, #input)
            }
        }
        (Some((ident, _)), None) => quote! {
            #codegen::call_with_input::<#marker>(__rpc_channel, __rpc_spec, __rpc_options, #args, #ident)
        },
        (None, None) if method.output_is_bytes => quote! {
            {
                let __rpc_call = #unary;
                async move {
                    match __rpc_call.await {
                        #codegen::Result::Ok(bytes) => #codegen::Result::Ok(bytes.0),
                        #codegen::Result::Err(error) => #codegen::Result::Err(error),
                    }
                }
            }
        },
        (None, None) => unary,
    };
    quote! {
        #docs
        #vis fn #ident(
            &self,
            #(#params),*
        ) -> impl #codegen::Future<Output = #codegen::Result<#output, #codegen::RpcError>>
               + #codegen::Send
               + 'static
               + #use_list {
            #spec
            let __rpc_channel = #codegen::Clone::clone(&self.channel);
            let __rpc_options = #codegen::Clone::clone(&self.options);
            #call
        }
    }
}
