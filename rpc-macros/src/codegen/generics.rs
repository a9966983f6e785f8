//! The trait's type parameters, as the generated items carry them: bare on the structs
//! (`StoreClient<K, V>`), with the trait's bounds on the impls, and `'static` where the
//! runtime keeps them (servers, markers, shapes).

use proc_macro2::TokenStream;
use quote::quote;
use syn::{GenericParam, Generics, Ident};

/// A trait's type parameters.
pub(crate) struct Params {
    idents: Vec<Ident>,
    bounded: Vec<TokenStream>,
    predicates: Vec<TokenStream>,
}

impl Params {
    pub(crate) fn of(generics: &Generics) -> Params {
        let mut idents = Vec::new();
        let mut bounded = Vec::new();
        for param in &generics.params {
            if let GenericParam::Type(param) = param {
                let ident = &param.ident;
                let bounds = &param.bounds;
                idents.push(ident.clone());
                bounded.push(if bounds.is_empty() {
                    quote!(#ident)
                } else {
                    quote!(#ident: #bounds)
                });
            }
        }
        let mut predicates: Vec<TokenStream> = generics
            .where_clause
            .iter()
            .flat_map(|clause| clause.predicates.iter())
            .map(|predicate| quote!(#predicate))
            .collect();
        predicates.extend(idents.iter().map(|ident| quote!(#ident: 'static)));
        Params {
            idents,
            bounded,
            predicates,
        }
    }

    /// `<K, V>`, or nothing for a trait without type parameters.
    pub(crate) fn bare(&self) -> TokenStream {
        if self.idents.is_empty() {
            return TokenStream::new();
        }
        let idents = &self.idents;
        quote!(<#(#idents),*>)
    }

    /// The parameters after `first` (a parameter of the item's own), bare: `<T, K, V>`.
    pub(crate) fn bare_after(&self, first: &TokenStream) -> TokenStream {
        let idents = &self.idents;
        quote!(<#first #(, #idents)*>)
    }

    /// The `use<..>` list of an opaque type that captures the parameters and nothing else.
    pub(crate) fn use_list(&self) -> TokenStream {
        let idents = &self.idents;
        quote!(use<#(#idents),*>)
    }

    /// `PhantomData` of the parameters, for a struct that carries them without values.
    pub(crate) fn phantom(&self, codegen: &TokenStream) -> TokenStream {
        let idents = &self.idents;
        quote!(#codegen::PhantomData<fn() -> (#(#idents,)*)>)
    }

    /// The impl's parameter list with the trait's bounds, after `first` if given.
    pub(crate) fn impl_params(&self, first: Option<&TokenStream>) -> TokenStream {
        let bounded = &self.bounded;
        match first {
            Some(first) => quote!(<#first #(, #bounded)*>),
            None if bounded.is_empty() => TokenStream::new(),
            None => quote!(<#(#bounded),*>),
        }
    }

    /// The trait's `where` predicates, `'static` for each parameter, and `extra`.
    pub(crate) fn where_clause(&self, extra: &[TokenStream]) -> TokenStream {
        let predicates = self.predicates.iter().chain(extra);
        quote!(where #(#predicates,)*)
    }
}
