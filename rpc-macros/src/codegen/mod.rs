//! Emits the generated items in reading order: the trait, the client, the server.
//!
//! Generated code names the runtime and the standard library only through
//! `#krate::codegen`, so it works under `#![no_implicit_prelude]` and whatever the user's
//! crate shadows. Every name it introduces beside the user's (locals, constants, generic
//! parameters) starts with `__rpc`/`__Rpc`/`__RPC`, so no argument or type name of the
//! user's can collide with one.

mod client;
pub(crate) mod generics;
mod server;
mod service_trait;
pub(crate) mod stub;

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::model::{MethodModel, ServiceModel};

pub(crate) fn generate(model: &ServiceModel) -> TokenStream {
    let service_trait = service_trait::generate(model);
    let method_types = method_types(model);
    let client = client::generate(model);
    let server = server::generate(model);
    quote! {
        #service_trait
        #method_types
        #client
        #server
    }
}

/// The marker type of one method with the trait's type parameters: `__Rpc_Store_put<K, V>`.
fn marker_type(model: &ServiceModel, method: &MethodModel) -> TokenStream {
    let marker = marker(model, method);
    let bare = generics::Params::of(&model.item.generics).bare();
    quote!(#marker #bare)
}

/// The marker type that names one method's types (see [`method_types`]).
fn marker(model: &ServiceModel, method: &MethodModel) -> syn::Ident {
    quote::format_ident!(
        "__Rpc_{}_{}",
        crate::names::wire_name(&model.trait_ident),
        crate::names::wire_name(&method.ident)
    )
}

/// A marker type per method, implementing `MethodTypes` with the types the method carries.
/// Client, server and shapes name the types only through it, so a type serde cannot carry
/// is reported once, here: the arguments at the method's parameter list, the result and
/// stream items at their own types.
fn method_types(model: &ServiceModel) -> TokenStream {
    let codegen = codegen_path(model);
    let params = generics::Params::of(&model.item.generics);
    let bare = params.bare();
    let phantom = params.phantom(&codegen);
    let impl_params = params.impl_params(None);
    let where_clause = params.where_clause(&[]);
    let items = model.methods.iter().map(|method| {
        let marker = marker(model, method);
        let wire_types = method.args.iter().map(|arg| {
            if arg.is_bytes {
                block_type(&codegen, arg.is_shared)
            } else {
                let ty = &arg.ty;
                quote!(#ty)
            }
        });
        let params_span = method.sig.paren_token.span.join();
        let args = quote::quote_spanned!(params_span=> (#(#wire_types,)*));
        let unit = quote!(());
        let output = match &method.output_stream {
            Some(_) => unit.clone(),
            None if method.output_is_bytes => block_type(&codegen, method.output_is_shared),
            None => {
                let output = &method.output;
                quote!(#output)
            }
        };
        let shares_bytes = method.args.iter().any(|arg| arg.is_shared).then(|| {
            quote!(
                const SHARES_BYTES: bool = true;
            )
        });
        let input_item = method
            .input_stream
            .as_ref()
            .map_or_else(|| unit.clone(), |(_, item)| quote!(#item));
        let output_item = method
            .output_stream
            .as_ref()
            .map_or_else(|| unit.clone(), |item| quote!(#item));
        quote! {
            #[doc(hidden)]
            #[allow(non_camel_case_types, dead_code)]
            struct #marker #bare (#phantom);

            #[automatically_derived]
            impl #impl_params #codegen::MethodTypes for #marker #bare #where_clause {
                type Args = #args;
                type Output = #output;
                type InputItem = #input_item;
                type OutputItem = #output_item;
                #shares_bytes
            }
        }
    });
    quote!(#(#items)*)
}

/// `#krate::codegen`, the one path generated code reaches the runtime through.
fn codegen_path(model: &ServiceModel) -> TokenStream {
    let krate = &model.krate;
    quote!(#krate::codegen)
}

/// `#[service(schema)]`: the method's JSON Schemas from its types' own `JsonSchema`
/// implementations. Each type's schema is asked for at the type's own span, so a type that
/// does not implement it is reported where the user wrote it.
fn own_schemas(codegen: &TokenStream, method: &MethodModel) -> TokenStream {
    let schema_of = |ty: &syn::Type, is_bytes: bool| {
        if is_bytes {
            quote!(#codegen::bytes_schema as #codegen::SchemaOf)
        } else {
            quote_spanned!(ty.span()=> #codegen::schema_of::<#ty> as #codegen::SchemaOf)
        }
    };
    let args = method
        .args
        .iter()
        .map(|arg| schema_of(&arg.ty, arg.is_bytes));
    let result = schema_of(&method.output, method.output_is_bytes);
    let item = |item: Option<&syn::Type>| match item {
        Some(ty) => {
            let schema = schema_of(ty, false);
            quote!(#codegen::Option::Some(#schema))
        }
        None => quote!(#codegen::Option::None),
    };
    let input = item(method.input_stream.as_ref().map(|(_, ty)| ty));
    let output = item(method.output_stream.as_ref());
    quote! {
        .with_json_schemas(|| #codegen::own_schemas(&[#(#args),*], #result, #input, #output))
    }
}

/// The body of the client's `__rpc_shapes`: each method's shape, traced once from the types
/// its marker names, with the fingerprint of its spelling as the fallback.
fn shapes_body(model: &ServiceModel) -> TokenStream {
    let codegen = codegen_path(model);
    let entries = model.methods.iter().map(|method| {
        let marker = marker_type(model, method);
        let arg_names = method
            .args
            .iter()
            .map(|arg| crate::names::wire_name(&arg.ident));
        let name = &method.wire_name;
        let fallback = proc_macro2::Literal::u32_suffixed(method.fingerprint);
        let idempotent = method.idempotent;
        let takes_stream = method.input_stream.is_some();
        let returns_stream = method.output_stream.is_some();
        let doc = crate::names::doc_text(&method.docs);
        let own_schemas = model.schema.then(|| own_schemas(&codegen, method));
        quote! {
            #codegen::MethodEntry::describe::<#marker>(
                #name,
                &[#(#arg_names),*],
                #fallback,
                #idempotent,
                #codegen::CallKind::of(#takes_stream, #returns_stream),
                #doc,
            )
            #own_schemas
        }
    });
    if model.item.generics.params.is_empty() {
        quote! {
            static __RPC_SHAPES: #codegen::OnceLock<#codegen::ServiceShapes> = #codegen::OnceLock::new();
            __RPC_SHAPES.get_or_init(|| #codegen::ServiceShapes::new([#(#entries),*]))
        }
    } else {
        // A static in a generic function is shared by every instantiation: the shapes of
        // each are kept by the instantiation's type.
        quote! {
            #codegen::cached::<Self, _>(|| #codegen::ServiceShapes::new([#(#entries),*]))
        }
    }
}

/// The type a block of bytes travels as: `ByteBuf` for `Vec<u8>`, `SharedBytes` for `Bytes`.
pub(crate) fn block_type(codegen: &TokenStream, shared: bool) -> TokenStream {
    if shared {
        quote!(#codegen::SharedBytes)
    } else {
        quote!(#codegen::ByteBuf)
    }
}
