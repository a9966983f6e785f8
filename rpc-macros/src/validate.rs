//! The rules a service trait must follow. Every violation is reported, each at the token
//! that is wrong, with what to write instead.

use std::collections::HashMap;

use quote::ToTokens;
use syn::Type;

use crate::names::{wire_id, wire_name};
use crate::parse::{misspelled_idempotent, streaming_item, ArgKind, Method, Service};

/// Names the generated client already uses for its own methods.
pub(crate) const CLIENT_METHODS: &[&str] = &[
    "new",
    "with_timeout",
    "with_deadline",
    "with_metadata",
    "channel",
];

/// Collects errors so that all of them are reported together.
#[derive(Default)]
struct Errors {
    first: Option<syn::Error>,
}

impl Errors {
    /// Reports `message` under all of `tokens` (from their first to their last token).
    fn push(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.add(syn::Error::new_spanned(tokens, message));
    }

    fn push_at(&mut self, span: proc_macro2::Span, message: impl std::fmt::Display) {
        self.add(syn::Error::new(span, message));
    }

    fn add(&mut self, error: syn::Error) {
        match &mut self.first {
            Some(first) => first.combine(error),
            None => self.first = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        match self.first {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

pub(crate) fn validate(service: &Service<'_>) -> syn::Result<()> {
    let mut errors = Errors::default();
    let original = service.original;
    for param in &original.generics.params {
        match param {
            syn::GenericParam::Type(_) => {}
            syn::GenericParam::Lifetime(lifetime) => errors.push(
                lifetime,
                "`#[service]` traits cannot have lifetime parameters: a borrowed argument lives \
                 as long as its call; write `&T` in the method, without a lifetime",
            ),
            syn::GenericParam::Const(constant) => errors.push(
                constant,
                "`#[service]` traits cannot have const parameters; use a type parameter",
            ),
        }
    }
    if let Some(unsafety) = &original.unsafety {
        errors.push(
            unsafety,
            "`#[service]` traits cannot be `unsafe`; remove `unsafe`",
        );
    }
    if let Some(auto_token) = &original.auto_token {
        errors.push(auto_token, "`#[service]` traits cannot be `auto` traits");
    }
    for item in &service.other_items {
        errors.push(
            item,
            "`#[service]` traits can only contain methods; move types and constants out of the trait",
        );
    }
    let mut seen_names: HashMap<String, &syn::Ident> = HashMap::new();
    let mut seen_ids: HashMap<u32, String> = HashMap::new();
    for method in &service.methods {
        validate_method(method, &mut errors);
        let name = wire_name(method.ident);
        if seen_names.insert(name.clone(), method.ident).is_some() {
            errors.push(
                method.ident,
                format_args!(
                    "duplicate method `{name}`; every method of a service needs its own name"
                ),
            );
            continue;
        }
        if let Some(other) = seen_ids.insert(wire_id(&name), name.clone()) {
            errors.push(
                method.ident,
                format_args!(
                    "method `{name}` has the same wire id as `{other}`; rename one of them"
                ),
            );
        }
        if CLIENT_METHODS.contains(&name.as_str()) {
            errors.push(
                method.ident,
                format_args!(
                    "method name `{name}` conflicts with the generated client's own `{name}`; rename the method"
                ),
            );
        }
    }
    errors.finish()
}

fn validate_method(method: &Method<'_>, errors: &mut Errors) {
    let sig = &method.original.sig;
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token,
            "`#[service]` methods must be `async fn`; add `async`",
        );
    }
    if let Some(constness) = &sig.constness {
        errors.push(
            constness,
            "`#[service]` methods cannot be `const`; remove `const`",
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(
            unsafety,
            "`#[service]` methods cannot be `unsafe`; remove `unsafe`",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.push(
            abi,
            "`#[service]` methods cannot have an ABI; remove `extern`",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(variadic, "`#[service]` methods cannot be variadic");
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(
            &sig.generics,
            "`#[service]` methods cannot be generic; use concrete argument and result types",
        );
    }
    if let Some(body) = &method.original.default {
        errors.push_at(
            body.brace_token.span.join(),
            "`#[service]` methods cannot have a default body; remove it and implement the method in the `impl` block",
        );
    }
    match method.receiver {
        None => errors.push(
            &sig.ident,
            "`#[service]` methods take `&self` first; add `&self` as the first argument",
        ),
        Some(receiver) => {
            let by_shared_ref = receiver.reference.is_some()
                && receiver.mutability.is_none()
                && receiver.colon_token.is_none();
            if !by_shared_ref {
                let message = if receiver.mutability.is_some() && receiver.reference.is_some() {
                    "`#[service]` methods take `&self`, not `&mut self`: calls run concurrently; use interior mutability"
                } else {
                    "`#[service]` methods take `&self`; write `&self` instead"
                };
                errors.push(receiver, message);
            }
        }
    }
    let mut streams = method.args.iter().filter(|arg| arg.kind == ArgKind::Stream);
    if let (Some(_), Some(second)) = (streams.next(), streams.next()) {
        errors.push(
            second.ty,
            "a `#[service]` method takes at most one `Streaming<T>` argument; send one stream of an enum or a tuple instead",
        );
    }
    for (position, arg) in method.args.iter().enumerate() {
        if arg.ident.is_none() {
            errors.push(
                arg.pat,
                "patterns are not allowed in `#[service]` method arguments; use a plain name like `value: T`",
            );
        }
        match arg.kind {
            ArgKind::ContextRef if position != 0 => errors.push(
                arg.ty,
                "`&Context` must be the first argument after `&self`; move it there",
            ),
            ArgKind::ContextMisused => errors.push(
                arg.ty,
                "take the context by shared reference: `cx: &Context`",
            ),
            ArgKind::Value => check_argument(arg.ty, method, errors),
            ArgKind::ContextRef | ArgKind::Stream => {}
        }
    }
    if let Some(output) = method.output {
        check_owned(output, "result", errors);
    }
    validate_idempotent(method, errors);
    check_misspelled_attributes(method, errors);
}

/// `#[idempotent]`: a bare marker, once, on a unary method.
fn validate_idempotent(method: &Method<'_>, errors: &mut Errors) {
    let Some((first, repeats)) = method.idempotent.split_first() else {
        return;
    };
    for repeat in repeats {
        errors.push(
            repeat,
            "`#[idempotent]` is given more than once; remove the repeat",
        );
    }
    if !matches!(first.meta, syn::Meta::Path(_)) {
        errors.push(
            first,
            "`#[idempotent]` takes no arguments; write `#[idempotent]`",
        );
    }
    let streams = method.args.iter().any(|arg| arg.kind == ArgKind::Stream)
        || method
            .output
            .is_some_and(|output| streaming_item(output).is_some());
    if streams {
        errors.push(
            first,
            "`#[idempotent]` is for unary methods: a streaming call is never retried; remove it",
        );
    }
}

/// An argument is an owned type, or a shared borrow (`&str`, `&[u8]`, `&T`) of one with an
/// elided lifetime, which the handler receives from the received frame; a streaming method
/// takes owned arguments.
fn check_argument(ty: &Type, method: &Method<'_>, errors: &mut Errors) {
    let Type::Reference(reference) = ty else {
        return check_owned(ty, "argument", errors);
    };
    if reference.mutability.is_some() {
        errors.push(
            ty,
            format_args!(
                "a `#[service]` argument can be borrowed shared, not `&mut`: the handler cannot \
                 change the caller's value; write `&{}`",
                reference.elem.to_token_stream()
            ),
        );
    } else if let Some(lifetime) = &reference.lifetime {
        errors.push(
            lifetime,
            "a borrowed `#[service]` argument lives as long as its call; leave its lifetime out \
             (write `&T`)",
        );
    } else if matches!(*reference.elem, Type::Reference(_) | Type::ImplTrait(_)) {
        check_owned(&reference.elem, "argument", errors);
    } else if method.has_stream() {
        errors.push(
            ty,
            format_args!(
                "a `#[service]` method with a stream takes owned arguments; write `{}`",
                owned_form(&reference.elem)
            ),
        );
    }
}

/// Arguments and results cross the wire, so they must be owned types the codec can build.
fn check_owned(ty: &Type, what: &str, errors: &mut Errors) {
    match ty {
        Type::Reference(reference) => errors.push(
            ty,
            format_args!(
                "a `#[service]` {what} must be an owned type; write `{}`",
                owned_form(&reference.elem)
            ),
        ),
        Type::ImplTrait(impl_trait) => match future_output(impl_trait) {
            Some(output) => errors.push(
                ty,
                format_args!(
                    "a `#[service]` method is an `async fn` returning its value; write `-> {}` \
                     instead of `-> impl Future`",
                    output.to_token_stream()
                ),
            ),
            None => errors.push(
                ty,
                format_args!("a `#[service]` {what} cannot be `impl Trait`; name a concrete type"),
            ),
        },
        _ => {}
    }
}

/// The owned type a borrowed `&elem` travels as: `String` for `str`, `Vec<T>` for `[T]`,
/// the type itself otherwise.
fn owned_form(elem: &Type) -> String {
    match elem {
        Type::Path(path) if path.path.is_ident("str") => "String".to_owned(),
        Type::Slice(slice) => format!("Vec<{}>", slice.elem.to_token_stream()),
        other => other.to_token_stream().to_string(),
    }
}

/// `X` of an `impl Future<Output = X>`.
fn future_output(impl_trait: &syn::TypeImplTrait) -> Option<&Type> {
    impl_trait.bounds.iter().find_map(|bound| {
        let syn::TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let segment = bound.path.segments.last()?;
        if segment.ident != "Future" {
            return None;
        }
        let syn::PathArguments::AngleBracketed(arguments) = &segment.arguments else {
            return None;
        };
        arguments.args.iter().find_map(|argument| match argument {
            syn::GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(&assoc.ty),
            _ => None,
        })
    })
}

/// An attribute on a method that looks like a misspelled `#[idempotent]`.
fn check_misspelled_attributes(method: &Method<'_>, errors: &mut Errors) {
    for attribute in &method.original.attrs {
        if let Some(name) = misspelled_idempotent(attribute) {
            errors.push(
                attribute,
                format_args!("unknown attribute `#[{name}]`; did you mean `#[idempotent]`?"),
            );
        }
    }
}
