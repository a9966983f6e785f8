//! The codegen-ready description of a service. Every generated name and wire id is chosen
//! here; codegen only arranges tokens.

use proc_macro2::Ident;
use syn::{Attribute, Type, Visibility};

use crate::args::ServiceArgs;
use crate::names::{suffixed, wire_id, wire_name};
use crate::parse::{
    is_byte_block, is_idempotent, is_shared_bytes, streaming_item, ArgKind, Service,
};

pub(crate) struct ServiceModel {
    /// The user's trait, for its attributes, visibility, name and supertraits.
    pub(crate) item: syn::ItemTrait,
    pub(crate) krate: syn::Path,
    pub(crate) vis: Visibility,
    pub(crate) trait_ident: Ident,
    pub(crate) client_ident: Ident,
    pub(crate) server_ident: Ident,
    /// The service's name on the wire: the trait's name, raw prefix removed.
    pub(crate) wire_name: String,
    pub(crate) methods: Vec<MethodModel>,
    /// `#[service(schema)]`: JSON Schemas from the types' `JsonSchema` implementations.
    pub(crate) schema: bool,
}

pub(crate) struct MethodModel {
    pub(crate) ident: Ident,
    /// The method's signature as the user wrote it (for the trait).
    pub(crate) sig: syn::Signature,
    pub(crate) wire_name: String,
    pub(crate) wire_id: u32,
    /// Every attribute of the trait method (docs and others), for the trait.
    pub(crate) attrs: Vec<Attribute>,
    /// Only the doc comments, for the client method.
    pub(crate) docs: Vec<Attribute>,
    /// The `cx: &Context` argument as written, when the method takes one.
    pub(crate) context: Option<(Ident, Type)>,
    /// Every argument the client passes, in order (the wire arguments and the stream).
    pub(crate) params: Vec<(Ident, Type)>,
    /// The `Streaming<T>` argument's name and `T`, when the method takes one.
    pub(crate) input_stream: Option<(Ident, Type)>,
    /// The `T` of a `Streaming<T>` result.
    pub(crate) output_stream: Option<Type>,
    /// The arguments that travel over the wire.
    pub(crate) args: Vec<ArgModel>,
    /// The result type (`()` when the method returns nothing).
    pub(crate) output: Type,
    /// Whether the result is a `Vec<u8>` or `Bytes` sent as one block.
    pub(crate) output_is_bytes: bool,
    /// Whether the result is `Bytes` (a slice of the received frame).
    pub(crate) output_is_shared: bool,
    /// Marked `#[idempotent]`: safe to retry.
    pub(crate) idempotent: bool,
    /// A hash of the method's name and its argument and result types as written, which
    /// client and server compare to catch a client built against another version.
    pub(crate) fingerprint: u32,
}

pub(crate) struct ArgModel {
    pub(crate) ident: Ident,
    /// The type as it travels: the owned form of a borrowed argument.
    pub(crate) ty: Type,
    /// Whether it travels as one block of bytes (`Vec<u8>`, `&[u8]`, `Bytes`).
    pub(crate) is_bytes: bool,
    /// Whether it is `Bytes` (a slice of the received frame on the server).
    pub(crate) is_shared: bool,
    /// How the handler receives it.
    pub(crate) borrow: Borrow,
}

/// How a handler receives an argument.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Borrow {
    /// By value.
    Owned,
    /// `&str` or `&[u8]`: a slice of the received frame.
    Slice,
    /// `&T` (`&[T]`): a reference to the value decoded for the call.
    Ref,
}

impl ServiceModel {
    /// Lowers a validated service. Fails only on what validation already reported.
    pub(crate) fn lower(service: &Service<'_>, args: ServiceArgs) -> syn::Result<ServiceModel> {
        let item = service.original.clone();
        let trait_ident = item.ident.clone();
        let mut methods = Vec::with_capacity(service.methods.len());
        for method in &service.methods {
            let mut context = None;
            let mut wire_args = Vec::new();
            let mut params = Vec::new();
            let mut input_stream = None;
            for arg in &method.args {
                let ident = arg.ident.cloned().ok_or_else(|| {
                    syn::Error::new_spanned(arg.pat, "expected a plain argument name")
                })?;
                if arg.kind != ArgKind::ContextRef {
                    params.push((ident.clone(), arg.ty.clone()));
                }
                match arg.kind {
                    ArgKind::ContextRef => context = Some((ident, arg.ty.clone())),
                    ArgKind::Stream => {
                        let item = streaming_item(arg.ty)
                            .cloned()
                            .unwrap_or_else(|| arg.ty.clone());
                        input_stream = Some((ident, item));
                    }
                    ArgKind::ContextMisused | ArgKind::Value => {
                        wire_args.push(arg_model(ident, arg.ty, &args.krate));
                    }
                }
            }
            let output = method
                .output
                .cloned()
                .unwrap_or_else(|| syn::parse_quote!(()));
            let wire_name = wire_name(method.ident);
            let fingerprint = fingerprint(&wire_name, &params, &output);
            methods.push(MethodModel {
                ident: method.ident.clone(),
                sig: method.original.sig.clone(),
                wire_id: wire_id(&wire_name),
                wire_name,
                attrs: method
                    .original
                    .attrs
                    .iter()
                    .filter(|attr| !is_idempotent(attr))
                    .cloned()
                    .collect(),
                docs: method
                    .original
                    .attrs
                    .iter()
                    .filter(|attr| attr.path().is_ident("doc"))
                    .cloned()
                    .collect(),
                context,
                params,
                input_stream,
                output_stream: streaming_item(&output).cloned(),
                args: wire_args,
                output_is_bytes: is_byte_block(&output),
                output_is_shared: is_shared_bytes(&output),
                output,
                idempotent: !method.idempotent.is_empty(),
                fingerprint,
            });
        }
        let wire_name = match &args.name {
            Some(name) => name.value(),
            None => wire_name(&trait_ident),
        };
        Ok(ServiceModel {
            krate: args.krate,
            schema: args.schema,
            vis: item.vis.clone(),
            client_ident: suffixed(&trait_ident, "Client"),
            server_ident: suffixed(&trait_ident, "Server"),
            wire_name,
            trait_ident,
            methods,
            item,
        })
    }
}

/// An argument as it travels and as the handler receives it.
fn arg_model(ident: Ident, ty: &Type, krate: &syn::Path) -> ArgModel {
    let Type::Reference(reference) = ty else {
        return ArgModel {
            ident,
            ty: ty.clone(),
            is_bytes: is_byte_block(ty),
            is_shared: is_shared_bytes(ty),
            borrow: Borrow::Owned,
        };
    };
    let elem = &*reference.elem;
    match elem {
        Type::Path(path) if path.path.is_ident("str") => ArgModel {
            ident,
            ty: syn::parse_quote!(#krate::codegen::String),
            is_bytes: false,
            is_shared: false,
            borrow: Borrow::Slice,
        },
        Type::Slice(slice) => {
            let item = &slice.elem;
            let bytes = matches!(&**item, Type::Path(path) if path.path.is_ident("u8"));
            ArgModel {
                ident,
                ty: syn::parse_quote!(#krate::codegen::Vec<#item>),
                is_bytes: bytes,
                is_shared: false,
                borrow: if bytes { Borrow::Slice } else { Borrow::Ref },
            }
        }
        other => ArgModel {
            ident,
            ty: other.clone(),
            is_bytes: is_byte_block(other),
            is_shared: is_shared_bytes(other),
            borrow: Borrow::Ref,
        },
    }
}

/// The fingerprint of a method: the wire-id hash of `name(arg types) -> result type`, the
/// types as written (token by token, so spacing does not matter). Changing an argument's
/// or the result's type, adding or removing an argument, or renaming a type changes it;
/// renaming an argument does not.
fn fingerprint(name: &str, params: &[(Ident, Type)], output: &Type) -> u32 {
    use quote::ToTokens;
    let types: Vec<String> = params
        .iter()
        .map(|(_, ty)| ty.to_token_stream().to_string())
        .collect();
    let signature = format!(
        "{name}({}) -> {}",
        types.join(", "),
        output.to_token_stream()
    );
    wire_id(&signature)
}
