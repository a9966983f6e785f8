//! The decoder's side of the [`Budget`]: a serde `Deserializer` wrapper that holds a
//! payload to its limits as it reads it.
//!
//! `Guard` wraps any serde `Deserializer` and passes every call through, counting on the
//! way: each value is charged its `size_of` minus what its parent's slot already paid
//! (`covered`), each compound value's accessor counts the elements it yields and lends its
//! own slot to the values that live inline in it, and every level of nesting is entered in
//! the budget. The first limit broken ends the decoding with its reason.

use std::fmt;
use std::mem::size_of;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use super::budget::Budget;

/// A deserializer that enforces a [`Budget`].
pub(crate) struct Guard<'b, D> {
    pub(crate) inner: D,
    pub(crate) budget: &'b Budget,
    /// Bytes of the value about to be decoded that its parent's slot already paid for.
    pub(crate) covered: usize,
}

impl<'de, 'b, D: Deserializer<'de>> Guard<'b, D> {
    /// Charges the value `visitor` is about to build, and wraps the visitor; hands back the
    /// inner deserializer to build it with.
    fn admit<V: Visitor<'de>>(self, visitor: V) -> Result<(D, GuardVisitor<'b, V>), D::Error> {
        self.budget
            .charge_memory(size_of::<V::Value>().saturating_sub(self.covered))
            .map_err(de::Error::custom)?;
        let visitor = GuardVisitor {
            inner: visitor,
            budget: self.budget,
        };
        Ok((self.inner, visitor))
    }
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(
                self,
                $($arg: $ty,)*
                visitor: V,
            ) -> Result<V::Value, Self::Error> {
                let (inner, visitor) = self.admit(visitor)?;
                inner.$method($($arg,)* visitor)
            }
        )*
    };
}

impl<'de, 'b, D: Deserializer<'de>> Deserializer<'de> for Guard<'b, D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any(),
        deserialize_bool(),
        deserialize_i8(),
        deserialize_i16(),
        deserialize_i32(),
        deserialize_i64(),
        deserialize_i128(),
        deserialize_u8(),
        deserialize_u16(),
        deserialize_u32(),
        deserialize_u64(),
        deserialize_u128(),
        deserialize_f32(),
        deserialize_f64(),
        deserialize_char(),
        deserialize_str(),
        deserialize_string(),
        deserialize_bytes(),
        deserialize_byte_buf(),
        deserialize_option(),
        deserialize_unit(),
        deserialize_seq(),
        deserialize_map(),
        deserialize_identifier(),
        deserialize_ignored_any(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    );

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// Passes values through; wraps the accessors of compound values so that their elements are
/// counted and their nesting measured, lending them the compound value's own slot.
struct GuardVisitor<'b, V> {
    inner: V,
    budget: &'b Budget,
}

impl<'b, V> GuardVisitor<'b, V> {
    /// An accessor over the compound value this visitor builds, holding its slot as credit.
    fn access<'de, A>(&self, inner: A) -> GuardAccess<'b, A>
    where
        V: Visitor<'de>,
    {
        GuardAccess {
            inner,
            budget: self.budget,
            credit: size_of::<V::Value>(),
        }
    }

    /// A deserializer for the one value inside the value this visitor builds.
    fn inside<'de, D>(&self, inner: D) -> Guard<'b, D>
    where
        V: Visitor<'de>,
    {
        Guard {
            inner,
            budget: self.budget,
            covered: size_of::<V::Value>(),
        }
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, value: $ty) -> Result<Self::Value, E> {
                self.inner.$method(value)
            }
        )*
    };
}

impl<'de, 'b, V: Visitor<'de>> Visitor<'de> for GuardVisitor<'b, V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(formatter)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let _depth = self.budget.enter().map_err(de::Error::custom)?;
        let inside = self.inside(deserializer);
        self.inner.visit_some(inside)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        let _depth = self.budget.enter().map_err(de::Error::custom)?;
        let inside = self.inside(deserializer);
        self.inner.visit_newtype_struct(inside)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let _depth = self.budget.enter().map_err(de::Error::custom)?;
        let access = self.access(seq);
        self.inner.visit_seq(access)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let _depth = self.budget.enter().map_err(de::Error::custom)?;
        let access = self.access(map);
        self.inner.visit_map(access)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let _depth = self.budget.enter().map_err(de::Error::custom)?;
        let access = self.access(data);
        self.inner.visit_enum(access)
    }
}

/// The accessor of a sequence, map, tuple, struct or enum: counts what it yields, and holds
/// the compound value's slot (`credit`) for the values that live inline in it (a struct's
/// fields, a variant's payload). A `Vec`'s or map's elements do not fit in it, so after the
/// first few bytes they are charged.
struct GuardAccess<'b, A> {
    inner: A,
    budget: &'b Budget,
    credit: usize,
}

/// A seed whose value is charged against its parent's `credit` and decoded through a
/// [`Guard`]. Charged only when there is a value: the look that ends a sequence costs an
/// element, not a slot.
struct GuardSeed<'b, 'c, S> {
    inner: S,
    budget: &'b Budget,
    credit: &'c mut usize,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for GuardSeed<'_, '_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let size = size_of::<S::Value>();
        self.budget
            .charge_value(size, self.credit)
            .map_err(de::Error::custom)?;
        self.inner.deserialize(Guard {
            inner: deserializer,
            budget: self.budget,
            covered: size,
        })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for GuardAccess<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.budget.charge_element().map_err(de::Error::custom)?;
        let seed = GuardSeed {
            inner: seed,
            budget: self.budget,
            credit: &mut self.credit,
        };
        self.inner.next_element_seed(seed)
    }

    /// Never a claimed length: collections grow with the elements that arrive. A few bytes
    /// can claim entries of any size, and serde reserves up to 1 MiB for a claim before the
    /// first element is read.
    fn size_hint(&self) -> Option<usize> {
        None
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for GuardAccess<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.budget.charge_element().map_err(de::Error::custom)?;
        let seed = GuardSeed {
            inner: seed,
            budget: self.budget,
            credit: &mut self.credit,
        };
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        let seed = GuardSeed {
            inner: seed,
            budget: self.budget,
            credit: &mut self.credit,
        };
        self.inner.next_value_seed(seed)
    }

    /// Never a claimed length: collections grow with the elements that arrive. A few bytes
    /// can claim entries of any size, and serde reserves up to 1 MiB for a claim before the
    /// first element is read.
    fn size_hint(&self) -> Option<usize> {
        None
    }
}

impl<'de, 'b, A: EnumAccess<'de>> EnumAccess<'de> for GuardAccess<'b, A> {
    type Error = A::Error;
    type Variant = GuardAccess<'b, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), Self::Error> {
        let GuardAccess {
            inner,
            budget,
            credit,
        } = self;
        // The variant's name or index is read into a throwaway value on the stack.
        let mut free = usize::MAX;
        let seed = GuardSeed {
            inner: seed,
            budget,
            credit: &mut free,
        };
        let (value, variant) = inner.variant_seed(seed)?;
        let variant = GuardAccess {
            inner: variant,
            budget,
            credit,
        };
        Ok((value, variant))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for GuardAccess<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        mut self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        let seed = GuardSeed {
            inner: seed,
            budget: self.budget,
            credit: &mut self.credit,
        };
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = GuardVisitor {
            inner: visitor,
            budget: self.budget,
        };
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = GuardVisitor {
            inner: visitor,
            budget: self.budget,
        };
        self.inner.struct_variant(fields, visitor)
    }
}
