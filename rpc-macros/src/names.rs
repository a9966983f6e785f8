//! Naming helpers: the wire id function and the names of generated items.

use proc_macro2::Ident;
use quote::format_ident;
use syn::ext::IdentExt;

/// 32-bit FNV-1a, the same function as `rpc_core::wire::wire_id`.
pub(crate) fn wire_id(name: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The name an identifier has on the wire: raw identifiers lose their `r#`.
pub(crate) fn wire_name(ident: &Ident) -> String {
    ident.unraw().to_string()
}

/// `{Name}{suffix}`, built from the unraw name so `r#trait` gives `traitClient`.
pub(crate) fn suffixed(ident: &Ident, suffix: &str) -> Ident {
    format_ident!("{}{}", ident.unraw(), suffix, span = ident.span())
}

/// The text of doc comments (`#[doc = "..."]` attributes), one line each, trimmed.
pub(crate) fn doc_text(docs: &[syn::Attribute]) -> String {
    let lines: Vec<String> = docs
        .iter()
        .filter_map(|attr| match &attr.meta {
            syn::Meta::NameValue(syn::MetaNameValue {
                value:
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(text),
                        ..
                    }),
                ..
            }) => Some(text.value().trim().to_owned()),
            _ => None,
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_ids_match_the_runtime_reference_values() {
        assert_eq!(wire_id(""), 0x811c_9dc5);
        assert_eq!(wire_id("a"), 0xe40c_292c);
        assert_eq!(wire_id("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn raw_identifiers_lose_their_prefix() {
        let ident: Ident = syn::parse_quote!(r#trait);
        assert_eq!(wire_name(&ident), "trait");
        assert_eq!(suffixed(&ident, "Client").to_string(), "traitClient");
    }
}
