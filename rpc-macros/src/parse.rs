//! The trait as syntax: what each method looks like, with the tokens errors point at.
//!
//! Nothing here rejects anything (that is `validate`) or emits tokens (that is `codegen`).

use syn::{Attribute, FnArg, Ident, ItemTrait, Pat, ReturnType, TraitItem, TraitItemFn, Type};

/// The trait `#[service]` was put on.
pub(crate) struct Service<'a> {
    pub(crate) original: &'a ItemTrait,
    pub(crate) methods: Vec<Method<'a>>,
    /// Trait items that are not methods (types, consts, macros).
    pub(crate) other_items: Vec<&'a TraitItem>,
}

/// One method of the trait.
pub(crate) struct Method<'a> {
    pub(crate) original: &'a TraitItemFn,
    pub(crate) ident: &'a Ident,
    pub(crate) receiver: Option<&'a syn::Receiver>,
    pub(crate) args: Vec<Arg<'a>>,
    pub(crate) output: Option<&'a Type>,
    /// Every `#[idempotent]` on the method (more than one is a mistake `validate` reports).
    pub(crate) idempotent: Vec<&'a Attribute>,
}

/// One argument after the receiver.
pub(crate) struct Arg<'a> {
    pub(crate) pat: &'a Pat,
    pub(crate) ty: &'a Type,
    /// The argument's name when its pattern is a plain identifier.
    pub(crate) ident: Option<&'a Ident>,
    pub(crate) kind: ArgKind,
}

/// What an argument's type says it is. Recognised by how the type is written (its last
/// path segment), so aliases are plain arguments.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArgKind {
    /// `&Context`: the call's context, not sent over the wire.
    ContextRef,
    /// `Context` by value or by `&mut`: a mistake `validate` reports.
    ContextMisused,
    /// `Streaming<T>`: the call's request stream, not part of the encoded arguments.
    Stream,
    /// Anything else: a serialized argument.
    Value,
}

impl<'a> Service<'a> {
    pub(crate) fn from_syn(original: &'a ItemTrait) -> Service<'a> {
        let mut methods = Vec::new();
        let mut other_items = Vec::new();
        for item in &original.items {
            match item {
                TraitItem::Fn(function) => methods.push(Method::from_syn(function)),
                other => other_items.push(other),
            }
        }
        Service {
            original,
            methods,
            other_items,
        }
    }
}

impl Method<'_> {
    /// Whether the method takes or returns a stream.
    pub(crate) fn has_stream(&self) -> bool {
        self.args.iter().any(|arg| arg.kind == ArgKind::Stream)
            || self
                .output
                .is_some_and(|output| streaming_item(output).is_some())
    }
}

impl<'a> Method<'a> {
    fn from_syn(original: &'a TraitItemFn) -> Method<'a> {
        let mut receiver = None;
        let mut args = Vec::new();
        for input in &original.sig.inputs {
            match input {
                FnArg::Receiver(found) => receiver = Some(found),
                FnArg::Typed(typed) => args.push(Arg {
                    pat: &typed.pat,
                    ty: &typed.ty,
                    ident: plain_ident(&typed.pat),
                    kind: arg_kind(&typed.ty),
                }),
            }
        }
        let output = match &original.sig.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => Some(&**ty),
        };
        Method {
            original,
            ident: &original.sig.ident,
            receiver,
            args,
            output,
            idempotent: original
                .attrs
                .iter()
                .filter(|attr| is_idempotent(attr))
                .collect(),
        }
    }
}

/// Whether `attr` is `#[idempotent]` (with or without arguments), an attribute `#[service]`
/// reads and removes.
pub(crate) fn is_idempotent(attr: &Attribute) -> bool {
    attr.path().is_ident("idempotent")
}

/// The trait without the attributes `#[service]` reads on its methods, for emitting it as
/// the user wrote it otherwise.
pub(crate) fn without_service_attributes(item: &ItemTrait) -> ItemTrait {
    let mut item = item.clone();
    for trait_item in &mut item.items {
        if let TraitItem::Fn(function) = trait_item {
            function
                .attrs
                .retain(|attr| !is_idempotent(attr) && misspelled_idempotent(attr).is_none());
        }
    }
    item
}

/// The name of an attribute that looks like a misspelled `#[idempotent]` (`idempotnet`,
/// `Idempotent`), which `validate` reports and the emitted trait drops.
pub(crate) fn misspelled_idempotent(attr: &Attribute) -> Option<String> {
    let name = attr.path().get_ident()?.to_string();
    (name != "idempotent" && edit_distance(&name.to_lowercase(), "idempotent") <= 3).then_some(name)
}

/// The Levenshtein distance between `a` and `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, b_char) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(a_char != *b_char);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

fn plain_ident(pat: &Pat) -> Option<&Ident> {
    match pat {
        Pat::Ident(pat_ident)
            if pat_ident.by_ref.is_none()
                && pat_ident.mutability.is_none()
                && pat_ident.subpat.is_none() =>
        {
            Some(&pat_ident.ident)
        }
        _ => None,
    }
}

fn arg_kind(ty: &Type) -> ArgKind {
    match ty {
        Type::Reference(reference) if is_context(&reference.elem) => {
            if reference.mutability.is_some() {
                ArgKind::ContextMisused
            } else {
                ArgKind::ContextRef
            }
        }
        other if is_context(other) => ArgKind::ContextMisused,
        other if streaming_item(other).is_some() => ArgKind::Stream,
        _ => ArgKind::Value,
    }
}

fn is_context(ty: &Type) -> bool {
    last_segment_is(ty, "Context")
}

/// Whether `ty` is a path whose last segment is `name`.
pub(crate) fn last_segment_is(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == name),
        Type::Group(group) => last_segment_is(&group.elem, name),
        Type::Paren(paren) => last_segment_is(&paren.elem, name),
        _ => false,
    }
}

/// The `T` of a type written `Streaming<T>` (with any path to `Streaming`).
pub(crate) fn streaming_item(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let segment = path.path.segments.last()?;
    if segment.ident != "Streaming" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(generics) = &segment.arguments else {
        return None;
    };
    match generics.args.first() {
        Some(syn::GenericArgument::Type(item)) if generics.args.len() == 1 => Some(item),
        _ => None,
    }
}

/// Whether `ty` is written `Bytes`, `bytes::Bytes` or `rpc_core::Bytes` (the `bytes`
/// crate's shared buffer, which travels as one block and arrives as a slice of the received
/// frame).
pub(crate) fn is_shared_bytes(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    let segments = &path.path.segments;
    let named = |index: usize, name: &str| segments[index].ident == name;
    path.qself.is_none()
        && segments.iter().all(|segment| segment.arguments.is_none())
        && match segments.len() {
            1 => named(0, "Bytes"),
            2 => (named(0, "bytes") || named(0, "rpc_core")) && named(1, "Bytes"),
            _ => false,
        }
}

/// Whether `ty` travels as one block of bytes: `Vec<u8>` or `Bytes`.
pub(crate) fn is_byte_block(ty: &Type) -> bool {
    is_byte_vec(ty) || is_shared_bytes(ty)
}

/// Whether `ty` is written `Vec<u8>` (with any path to `Vec`).
pub(crate) fn is_byte_vec(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    if path.qself.is_some() {
        return false;
    }
    let Some(segment) = path.path.segments.last() else {
        return false;
    };
    if segment.ident != "Vec" {
        return false;
    }
    let syn::PathArguments::AngleBracketed(generics) = &segment.arguments else {
        return false;
    };
    matches!(
        generics.args.first(),
        Some(syn::GenericArgument::Type(Type::Path(element)))
            if generics.args.len() == 1 && element.qself.is_none() && element.path.is_ident("u8")
    )
}
