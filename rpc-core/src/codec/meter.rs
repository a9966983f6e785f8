//! The encoder's side of the [`Budget`]: a serde `Serializer` wrapper that counts what a
//! value will cost the peer's decoder in nesting and elements, so that we never send what
//! the peer must refuse for them.
//!
//! `Meter` passes every call through to postcard's serializer and counts on the way, the
//! way [`super::guard`] does on the other side: the same levels of nesting (an enum's
//! variant with fields is two, as the decoder reads it), and one element per element plus
//! one for the look that ends a sequence or map. Memory it cannot count: serde hands a
//! serializer the elements of a `Vec` behind references, and a `None` has no size at all,
//! so a value far larger in memory than on the wire is refused by the peer's decoder, with
//! the reason, not here.

use serde::ser::{
    self, Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant,
    SerializeTuple, SerializeTupleStruct, SerializeTupleVariant, Serializer,
};

use super::budget::{Budget, DepthGuard};

/// A value to serialize through a [`Meter`]: what the root and every element and payload
/// are wrapped in.
pub(crate) struct Metered<'v, 'b, T: ?Sized> {
    pub(crate) value: &'v T,
    pub(crate) budget: &'b Budget,
}

impl<T: Serialize + ?Sized> Serialize for Metered<'_, '_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Meter {
            inner: serializer,
            budget: self.budget,
        })
    }
}

/// A serializer that counts what it writes against a [`Budget`].
struct Meter<'b, S> {
    inner: S,
    budget: &'b Budget,
}

fn refusal<E: ser::Error>(reason: &'static str) -> E {
    E::custom(reason)
}

impl<'b, S: Serializer> Meter<'b, S> {
    /// Enters `levels` of nesting for a compound value, and wraps its serializer.
    fn compound<C>(
        budget: &'b Budget,
        levels: usize,
        ends_with_look: bool,
        open: impl FnOnce() -> Result<C, S::Error>,
    ) -> Result<MeterCompound<'b, C>, S::Error> {
        let outer = budget.enter().map_err(refusal)?;
        let inner_level = if levels > 1 {
            Some(budget.enter().map_err(refusal)?)
        } else {
            None
        };
        Ok(MeterCompound {
            inner: open()?,
            budget,
            ends_with_look,
            _levels: (outer, inner_level),
        })
    }

    /// Wraps the one value inside this serializer's value.
    fn payload<'v, T: ?Sized>(&self, value: &'v T) -> Metered<'v, 'b, T> {
        Metered {
            value,
            budget: self.budget,
        }
    }
}

macro_rules! forward_serialize {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $method(self, $($arg: $ty),*) -> Result<S::Ok, S::Error> {
                self.inner.$method($($arg),*)
            }
        )*
    };
}

impl<'b, S: Serializer> Serializer for Meter<'b, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = MeterCompound<'b, S::SerializeSeq>;
    type SerializeTuple = MeterCompound<'b, S::SerializeTuple>;
    type SerializeTupleStruct = MeterCompound<'b, S::SerializeTupleStruct>;
    type SerializeTupleVariant = MeterCompound<'b, S::SerializeTupleVariant>;
    type SerializeMap = MeterCompound<'b, S::SerializeMap>;
    type SerializeStruct = MeterCompound<'b, S::SerializeStruct>;
    type SerializeStructVariant = MeterCompound<'b, S::SerializeStructVariant>;

    forward_serialize!(
        serialize_bool(v: bool),
        serialize_i8(v: i8),
        serialize_i16(v: i16),
        serialize_i32(v: i32),
        serialize_i64(v: i64),
        serialize_i128(v: i128),
        serialize_u8(v: u8),
        serialize_u16(v: u16),
        serialize_u32(v: u32),
        serialize_u64(v: u64),
        serialize_u128(v: u128),
        serialize_f32(v: f32),
        serialize_f64(v: f64),
        serialize_char(v: char),
        serialize_str(v: &str),
        serialize_bytes(v: &[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(name: &'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        let _level = self.budget.enter().map_err(refusal)?;
        let payload = self.payload(value);
        self.inner.serialize_some(&payload)
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        let _level = self.budget.enter().map_err(refusal)?;
        self.inner.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let _level = self.budget.enter().map_err(refusal)?;
        let payload = self.payload(value);
        self.inner.serialize_newtype_struct(name, &payload)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let _level = self.budget.enter().map_err(refusal)?;
        let payload = self.payload(value);
        self.inner
            .serialize_newtype_variant(name, index, variant, &payload)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        let inner = self.inner;
        Meter::<S>::compound(self.budget, 1, true, || inner.serialize_seq(len))
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        let inner = self.inner;
        Meter::<S>::compound(self.budget, 1, false, || inner.serialize_tuple(len))
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        let inner = self.inner;
        Meter::<S>::compound(self.budget, 1, false, || {
            inner.serialize_tuple_struct(name, len)
        })
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        // The enum is one level, the variant's fields another (as the decoder reads them).
        let inner = self.inner;
        Meter::<S>::compound(self.budget, 2, false, || {
            inner.serialize_tuple_variant(name, index, variant, len)
        })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        let inner = self.inner;
        Meter::<S>::compound(self.budget, 1, true, || inner.serialize_map(len))
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        let inner = self.inner;
        Meter::<S>::compound(self.budget, 1, false, || inner.serialize_struct(name, len))
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        let inner = self.inner;
        Meter::<S>::compound(self.budget, 2, false, || {
            inner.serialize_struct_variant(name, index, variant, len)
        })
    }

    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.collect_str(value)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A compound value being written: counts its elements, as the decoder's accessor does.
pub(crate) struct MeterCompound<'b, C> {
    inner: C,
    budget: &'b Budget,
    /// Whether the decoder looks for one more element to find the end (a sequence or map)
    /// rather than reading a known count (a tuple or struct).
    ends_with_look: bool,
    _levels: (DepthGuard<'b>, Option<DepthGuard<'b>>),
}

impl<'b, C> MeterCompound<'b, C> {
    /// Counts one element, and wraps it.
    fn element<'v, T: ?Sized, E: ser::Error>(
        &mut self,
        value: &'v T,
    ) -> Result<Metered<'v, 'b, T>, E> {
        self.budget.charge_element().map_err(refusal)?;
        Ok(Metered {
            value,
            budget: self.budget,
        })
    }

    /// Counts the look for another element that ends a sequence or map.
    fn finish<E: ser::Error>(&self) -> Result<(), E> {
        if self.ends_with_look {
            self.budget.charge_element().map_err(refusal)?;
        }
        Ok(())
    }
}

/// The compound traits whose elements come without names: each element counted, then
/// passed on.
macro_rules! meter_elements {
    ($($trait:ident :: $method:ident),* $(,)?) => {
        $(
            impl<C: $trait> $trait for MeterCompound<'_, C> {
                type Ok = C::Ok;
                type Error = C::Error;

                fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
                    let element = self.element(value)?;
                    self.inner.$method(&element)
                }

                fn end(self) -> Result<C::Ok, C::Error> {
                    self.finish()?;
                    self.inner.end()
                }
            }
        )*
    };
}

meter_elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl<C: SerializeMap> SerializeMap for MeterCompound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        let key = self.element(key)?;
        self.inner.serialize_key(&key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let value = Metered {
            value,
            budget: self.budget,
        };
        self.inner.serialize_value(&value)
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.finish()?;
        self.inner.end()
    }
}

/// The compound traits whose fields come with names: each field counted, then passed on.
macro_rules! meter_fields {
    ($($trait:ident),* $(,)?) => {
        $(
            impl<C: $trait> $trait for MeterCompound<'_, C> {
                type Ok = C::Ok;
                type Error = C::Error;

                fn serialize_field<T: Serialize + ?Sized>(
                    &mut self,
                    key: &'static str,
                    value: &T,
                ) -> Result<(), C::Error> {
                    let field = self.element(value)?;
                    self.inner.serialize_field(key, &field)
                }

                fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
                    self.inner.skip_field(key)
                }

                fn end(self) -> Result<C::Ok, C::Error> {
                    self.finish()?;
                    self.inner.end()
                }
            }
        )*
    };
}

meter_fields!(SerializeStruct, SerializeStructVariant);
