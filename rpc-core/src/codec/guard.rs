//! Limits that postcard does not enforce on what a peer sends: how deep values nest, how
//! many elements a payload may claim, and how much memory its elements may take.
//!
//! `Guard` wraps any serde `Deserializer` and passes every call through, counting on the way:
//! nesting deeper than `MAX_DEPTH` is refused (a recursive type could otherwise overflow
//! the stack, an abort nothing can catch), and so are more elements than the payload could
//! hold (a `Vec<()>` claiming 2^63 elements costs no bytes per element, so postcard would spin
//! on it for ever), and so are elements whose in-memory slots add up to more than
//! `SLOT_BYTES_PER_BYTE` times the payload (a `Vec<Option<[u8; 4096]>>` of `None`s costs one
//! byte on the wire and 4097 in memory per element, so a 16 MiB frame would otherwise
//! decode into 64 GiB, and a failed allocation aborts the process).

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// How deep values may nest.
pub(crate) const MAX_DEPTH: usize = 128;

/// Bytes of element slots (`size_of` of each element of a sequence or map) a payload may
/// decode into per byte it carries, plus `SLOT_BYTES_ALLOWANCE`. Typical types stay far
/// below it (a `Vec<u64>` takes at most 8 per byte, a `Vec<String>` 24); what goes past is
/// an element type far larger in memory than on the wire, sent by the thousand.
pub(crate) const SLOT_BYTES_PER_BYTE: usize = 32;

/// Slot bytes every payload may use whatever its size.
const SLOT_BYTES_ALLOWANCE: usize = 64 * 1024;

/// What one decoding may still spend.
pub(crate) struct Budget {
    depth: Cell<usize>,
    elements: Cell<usize>,
    slot_bytes: Cell<usize>,
    /// Which limit a refused payload broke (formats' own errors may drop the text).
    violation: Cell<Option<&'static str>>,
}

impl Budget {
    /// A budget for a payload of `len` bytes: elements are charged against it, with room
    /// for a fair number of zero-sized ones.
    pub(crate) fn for_payload(len: usize) -> Self {
        Budget {
            depth: Cell::new(0),
            elements: Cell::new(len.saturating_mul(8).saturating_add(4096)),
            slot_bytes: Cell::new(
                len.saturating_mul(SLOT_BYTES_PER_BYTE)
                    .saturating_add(SLOT_BYTES_ALLOWANCE),
            ),
            violation: Cell::new(None),
        }
    }

    /// The limit the payload broke, if it broke one.
    pub(crate) fn violation(&self) -> Option<&'static str> {
        self.violation.get()
    }

    fn refuse<E: de::Error>(&self, reason: &'static str) -> E {
        self.violation.set(Some(reason));
        E::custom(reason)
    }

    fn enter<E: de::Error>(&self) -> Result<DepthGuard<'_>, E> {
        let depth = self.depth.get() + 1;
        if depth > MAX_DEPTH {
            return Err(self.refuse("values nest deeper than 128 levels"));
        }
        self.depth.set(depth);
        Ok(DepthGuard { budget: self })
    }

    /// Charges one element of type `V`: one against the element count, and its size
    /// against the slot bytes.
    fn charge_element<V, E: de::Error>(&self) -> Result<(), E> {
        match self.elements.get().checked_sub(1) {
            Some(left) => self.elements.set(left),
            None => return Err(self.refuse("more elements than the payload can hold")),
        }
        self.charge_slot::<V, E>()
    }

    /// Charges the in-memory size of a `V` against the slot bytes.
    fn charge_slot<V, E: de::Error>(&self) -> Result<(), E> {
        match self.slot_bytes.get().checked_sub(std::mem::size_of::<V>()) {
            Some(left) => {
                self.slot_bytes.set(left);
                Ok(())
            }
            None => {
                Err(self
                    .refuse("the payload's elements would take over 32 times its size in memory"))
            }
        }
    }
}

struct DepthGuard<'a> {
    budget: &'a Budget,
}

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        self.budget.depth.set(self.budget.depth.get() - 1);
    }
}

/// A deserializer that enforces a [`Budget`].
pub(crate) struct Guard<'b, D> {
    pub(crate) inner: D,
    pub(crate) budget: &'b Budget,
}

macro_rules! forward_plain {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                self.inner.$method(GuardVisitor { inner: visitor, budget: self.budget })
            }
        )*
    };
}

impl<'de, 'b, D: Deserializer<'de>> Deserializer<'de> for Guard<'b, D> {
    type Error = D::Error;

    forward_plain!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.deserialize_unit_struct(
            name,
            GuardVisitor {
                inner: visitor,
                budget: self.budget,
            },
        )
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.deserialize_newtype_struct(
            name,
            GuardVisitor {
                inner: visitor,
                budget: self.budget,
            },
        )
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.deserialize_tuple(
            len,
            GuardVisitor {
                inner: visitor,
                budget: self.budget,
            },
        )
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.deserialize_tuple_struct(
            name,
            len,
            GuardVisitor {
                inner: visitor,
                budget: self.budget,
            },
        )
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.deserialize_struct(
            name,
            fields,
            GuardVisitor {
                inner: visitor,
                budget: self.budget,
            },
        )
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.deserialize_enum(
            name,
            variants,
            GuardVisitor {
                inner: visitor,
                budget: self.budget,
            },
        )
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// Passes values through; wraps the accessors of compound values so that their elements are
/// counted and their nesting measured.
struct GuardVisitor<'b, V> {
    inner: V,
    budget: &'b Budget,
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
        let _depth = self.budget.enter()?;
        self.inner.visit_some(Guard {
            inner: deserializer,
            budget: self.budget,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        let _depth = self.budget.enter()?;
        self.inner.visit_newtype_struct(Guard {
            inner: deserializer,
            budget: self.budget,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let _depth = self.budget.enter()?;
        self.inner.visit_seq(GuardAccess {
            inner: seq,
            budget: self.budget,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let _depth = self.budget.enter()?;
        self.inner.visit_map(GuardAccess {
            inner: map,
            budget: self.budget,
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let _depth = self.budget.enter()?;
        self.inner.visit_enum(GuardAccess {
            inner: data,
            budget: self.budget,
        })
    }
}

/// The accessor of a sequence, map or enum, counting what it yields.
struct GuardAccess<'b, A> {
    inner: A,
    budget: &'b Budget,
}

/// A seed whose value is decoded through a [`Guard`].
struct GuardSeed<'b, S> {
    inner: S,
    budget: &'b Budget,
}

impl<'de, 'b, S: DeserializeSeed<'de>> DeserializeSeed<'de> for GuardSeed<'b, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.inner.deserialize(Guard {
            inner: deserializer,
            budget: self.budget,
        })
    }
}

impl<'de, 'b, A: SeqAccess<'de>> SeqAccess<'de> for GuardAccess<'b, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.budget.charge_element::<T::Value, _>()?;
        self.inner.next_element_seed(GuardSeed {
            inner: seed,
            budget: self.budget,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, 'b, A: MapAccess<'de>> MapAccess<'de> for GuardAccess<'b, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.budget.charge_element::<K::Value, _>()?;
        self.inner.next_key_seed(GuardSeed {
            inner: seed,
            budget: self.budget,
        })
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        self.budget.charge_slot::<T::Value, _>()?;
        self.inner.next_value_seed(GuardSeed {
            inner: seed,
            budget: self.budget,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, 'b, A: EnumAccess<'de>> EnumAccess<'de> for GuardAccess<'b, A> {
    type Error = A::Error;
    type Variant = GuardAccess<'b, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), Self::Error> {
        let budget = self.budget;
        let (value, variant) = self.inner.variant_seed(GuardSeed {
            inner: seed,
            budget,
        })?;
        Ok((
            value,
            GuardAccess {
                inner: variant,
                budget,
            },
        ))
    }
}

impl<'de, 'b, A: VariantAccess<'de>> VariantAccess<'de> for GuardAccess<'b, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        self.inner.newtype_variant_seed(GuardSeed {
            inner: seed,
            budget: self.budget,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.tuple_variant(
            len,
            GuardVisitor {
                inner: visitor,
                budget: self.budget,
            },
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.struct_variant(
            fields,
            GuardVisitor {
                inner: visitor,
                budget: self.budget,
            },
        )
    }
}
