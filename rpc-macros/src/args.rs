//! The attribute's own arguments: `#[service]`, `#[service(crate = "path")]`,
//! `#[service(name = "storefront.Inventory")]`, `#[service(schema)]`, or several.

use proc_macro2::TokenStream;
use syn::parse::Parser;

/// What `#[service(...)]` was given.
pub(crate) struct ServiceArgs {
    /// The path generated code reaches the runtime through (default `::rpc_core`).
    pub(crate) krate: syn::Path,
    /// The service's name on the wire, in errors, logs and metrics, when it is not the
    /// trait's name.
    pub(crate) name: Option<syn::LitStr>,
    /// `schema`: describe the types by their `schemars::JsonSchema` implementations.
    pub(crate) schema: bool,
}

impl ServiceArgs {
    /// Parses the arguments, reporting every unknown or repeated key.
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<ServiceArgs> {
        let mut krate: Option<syn::Path> = None;
        let mut name: Option<syn::LitStr> = None;
        let mut schema = false;
        let mut errors: Option<syn::Error> = None;
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("schema") {
                if schema {
                    push(
                        &mut errors,
                        meta.error("duplicate `schema` argument; give it once"),
                    );
                }
                schema = true;
                return Ok(());
            }
            if meta.path.is_ident("name") {
                let value: syn::LitStr = meta.value()?.parse()?;
                if let Some(problem) = wire_name_problem(&value.value()) {
                    push(&mut errors, syn::Error::new(value.span(), problem));
                }
                if name.replace(value).is_some() {
                    push(
                        &mut errors,
                        meta.error("duplicate `name` argument; give it once"),
                    );
                }
                return Ok(());
            }
            if meta.path.is_ident("crate") {
                let value: syn::LitStr = meta.value()?.parse()?;
                let path = value.parse::<syn::Path>().map_err(|_| {
                    syn::Error::new(
                        value.span(),
                        "expected a path, e.g. `crate = \"::rpc_core\"`",
                    )
                })?;
                if krate.replace(path).is_some() {
                    push(
                        &mut errors,
                        meta.error("duplicate `crate` argument; give it once"),
                    );
                }
                Ok(())
            } else {
                push(
                    &mut errors,
                    meta.error(
                        "unknown argument; expected `name = \"wire name\"`, `crate = \"path\"` or `schema`",
                    ),
                );
                // Skip the unknown argument's value, if any, so later keys are still read.
                if meta.input.peek(syn::Token![=]) {
                    let _: syn::Expr = meta.value()?.parse()?;
                }
                Ok(())
            }
        });
        if let Err(error) = parser.parse2(tokens) {
            push(&mut errors, error);
        }
        match errors {
            Some(error) => Err(error),
            None => Ok(ServiceArgs {
                krate: krate.unwrap_or_else(|| syn::parse_quote!(::rpc_core)),
                name,
                schema,
            }),
        }
    }
}

/// What is wrong with `name` as a service's wire name: it must be non-empty and made of
/// letters, digits, `_`, `-` and `.` (it becomes part of HTTP paths and metric labels).
fn wire_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("a service name cannot be empty");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if !name.chars().all(allowed) {
        return Some(
            "a service name is made of ASCII letters, digits, `_`, `-` and `.` (e.g. `storefront.Inventory`)",
        );
    }
    None
}

impl ServiceArgs {
    /// The `crate` path the arguments give, or `::rpc_core`, even when they have errors
    /// (for the stubs emitted beside those errors).
    pub(crate) fn krate_or_default(tokens: &TokenStream) -> syn::Path {
        match ServiceArgs::parse(tokens.clone()) {
            Ok(args) => args.krate,
            Err(_) => syn::parse_quote!(::rpc_core),
        }
    }
}

fn push(errors: &mut Option<syn::Error>, error: syn::Error) {
    match errors {
        Some(existing) => existing.combine(error),
        None => *errors = Some(error),
    }
}
