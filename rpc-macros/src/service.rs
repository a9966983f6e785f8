//! The macro's driver: runs the stages and turns errors into `compile_error!`s at the edge.

use proc_macro2::TokenStream;
use quote::quote;

use crate::{args, codegen, model, parse, validate};

/// Expands `#[service(args)] item`. On any error it emits the errors together with the
/// user's trait unchanged and stub `{Name}Client`/`{Name}Server` items, so one mistake does
/// not cascade into "cannot find" errors wherever the service is used.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let item_trait = match syn::parse2::<syn::ItemTrait>(item.clone()) {
        Ok(item_trait) => item_trait,
        Err(error) => {
            let error = syn::Error::new(
                error.span(),
                "`#[service]` goes on a trait: `#[service] pub trait Name { async fn method(&self) -> T; }`",
            );
            let error = error.into_compile_error();
            return quote! { #error #item };
        }
    };
    match try_expand(args.clone(), &item_trait) {
        Ok(tokens) => tokens,
        Err(error) => {
            let error = error.into_compile_error();
            let stubs = codegen::stub::generate(
                &parse::Service::from_syn(&item_trait),
                &args::ServiceArgs::krate_or_default(&args),
            );
            let item_trait = parse::without_service_attributes(&item_trait);
            quote! { #error #item_trait #stubs }
        }
    }
}

fn try_expand(args: TokenStream, item_trait: &syn::ItemTrait) -> syn::Result<TokenStream> {
    let args = args::ServiceArgs::parse(args);
    let service = parse::Service::from_syn(item_trait);
    let validated = validate::validate(&service);
    let args = combine(args, validated)?;
    let model = model::ServiceModel::lower(&service, args)?;
    Ok(codegen::generate(&model))
}

/// Keeps the value of `first` only when both succeeded; otherwise every error of both.
fn combine<T>(first: syn::Result<T>, second: syn::Result<()>) -> syn::Result<T> {
    match (first, second) {
        (Ok(value), Ok(())) => Ok(value),
        (Err(error), Ok(())) | (Ok(_), Err(error)) => Err(error),
        (Err(mut error), Err(more)) => {
            error.combine(more);
            Err(error)
        }
    }
}
