//! The attribute's own arguments: `#[service]` or `#[service(crate = "path")]`.

use proc_macro2::TokenStream;
use syn::parse::Parser;

/// What `#[service(...)]` was given.
pub(crate) struct ServiceArgs {
    /// The path generated code reaches the runtime through (default `::rpc_core`).
    pub(crate) krate: syn::Path,
}

impl ServiceArgs {
    /// Parses the arguments, reporting every unknown or repeated key.
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<ServiceArgs> {
        let mut krate: Option<syn::Path> = None;
        let mut errors: Option<syn::Error> = None;
        let parser = syn::meta::parser(|meta| {
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
                        "unknown argument; expected `#[service]` or `#[service(crate = \"path\")]`",
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
            }),
        }
    }
}

fn push(errors: &mut Option<syn::Error>, error: syn::Error) {
    match errors {
        Some(existing) => existing.combine(error),
        None => *errors = Some(error),
    }
}
