//! What one value may cost, counted the same way on both sides of the wire.
//!
//! A payload of `len` bytes may decode into at most [`max_elements`] elements (every element
//! a sequence, map, tuple or struct yields, zero-sized ones included, so a `Vec<()>` claiming
//! 2^63 elements cannot spin the decoder) and [`max_memory`] bytes of values, nesting at most
//! [`MAX_DEPTH`] levels (so a recursive type cannot overflow the stack).
//!
//! Memory is counted as memory, not as elements: every value is charged its `size_of`,
//! minus what the value that holds it already paid for. A struct's fields and an option's
//! payload live inside their parent's slot and cost nothing more; a sequence's elements,
//! a map's entries and whatever a `Box`, `Arc` or `Rc` points to do not fit in their
//! parent, so they are charged. A `Vec<Option<[u8; 4096]>>` of `None`s (one byte on the wire,
//! 4097 in memory per element) or a `Vec<Box<Option<..>>>` is refused, while a `Vec` of
//! records whose optional fields are all empty is not: it is only as big as its records.
//!
//! The decoder ([`super::guard`]) holds a payload to these limits as it reads it; the
//! encoder ([`super::meter`]) counts nesting and elements the same way as it writes and
//! refuses a value the peer's decoder would refuse for them (a `Vec<()>` of a million
//! elements is three bytes on the wire). Memory only the decoder can count (see
//! [`super::meter`]).

use std::cell::Cell;

/// How deep values may nest (every sequence, map, tuple, struct, enum, option and newtype
/// is a level).
pub(crate) const MAX_DEPTH: usize = 128;

/// Elements a payload of `len` bytes may yield: eight per byte, plus 4096.
pub(crate) fn max_elements(len: usize) -> usize {
    len.saturating_mul(8).saturating_add(4096)
}

/// Bytes of values a payload of `len` bytes may decode into: 32 per byte, plus 64 KiB.
/// Typical types stay far below it (a `Vec<u64>` takes at most 8 per byte, a `Vec<String>`
/// 24, a record of empty optional strings 24); what goes past is a value far larger in
/// memory than on the wire, sent by the thousand. Strings and byte blocks also own their
/// bytes, one per byte on the wire, which this does not count.
pub(crate) fn max_memory(len: usize) -> usize {
    len.saturating_mul(MEMORY_PER_BYTE)
        .saturating_add(MEMORY_ALLOWANCE)
}

const MEMORY_PER_BYTE: usize = 32;
const MEMORY_ALLOWANCE: usize = 64 * 1024;

pub(crate) const TOO_DEEP: &str = "values nest deeper than 128 levels";
pub(crate) const TOO_MANY: &str = "more elements than the payload can hold";
pub(crate) const TOO_BIG: &str = "the payload's values would take over 32 times its size in memory";

/// What one value has cost so far, against its limits.
pub(crate) struct Budget {
    depth: Cell<usize>,
    elements: Cell<usize>,
    memory: Cell<usize>,
    max_elements: usize,
    max_memory: usize,
    /// Which limit a refused value broke (formats' own errors may drop the text).
    violation: Cell<Option<&'static str>>,
}

impl Budget {
    /// The decoder's budget for a payload of `len` bytes.
    pub(crate) fn for_payload(len: usize) -> Self {
        Budget::with_limits(max_elements(len), max_memory(len))
    }

    /// The encoder's tally: only depth is limited while it writes (the length is not known
    /// until it has written); [`Budget::check_encoded`] applies the element limit at the end.
    pub(crate) fn for_encoding() -> Self {
        Budget::with_limits(usize::MAX, usize::MAX)
    }

    fn with_limits(max_elements: usize, max_memory: usize) -> Self {
        Budget {
            depth: Cell::new(0),
            elements: Cell::new(0),
            memory: Cell::new(0),
            max_elements,
            max_memory,
            violation: Cell::new(None),
        }
    }

    /// The limit the value broke, if it broke one.
    pub(crate) fn violation(&self) -> Option<&'static str> {
        self.violation.get()
    }

    /// Whether the elements counted while encoding fit what the peer's decoder allows a
    /// payload of `len` bytes.
    pub(crate) fn check_encoded(&self, len: usize) -> Result<(), &'static str> {
        if self.elements.get() > max_elements(len) {
            return Err(TOO_MANY);
        }
        Ok(())
    }

    fn refuse(&self, reason: &'static str) -> &'static str {
        self.violation.set(Some(reason));
        reason
    }

    /// Enters one level of nesting, until the returned guard drops.
    pub(crate) fn enter(&self) -> Result<DepthGuard<'_>, &'static str> {
        let depth = self.depth.get() + 1;
        if depth > MAX_DEPTH {
            return Err(self.refuse(TOO_DEEP));
        }
        self.depth.set(depth);
        Ok(DepthGuard { budget: self })
    }

    /// Counts one element (or the look for one that ends a sequence or map).
    pub(crate) fn charge_element(&self) -> Result<(), &'static str> {
        let elements = self.elements.get() + 1;
        if elements > self.max_elements {
            return Err(self.refuse(TOO_MANY));
        }
        self.elements.set(elements);
        Ok(())
    }

    /// Charges a value of `size` bytes held by a parent with `credit` bytes of its own slot
    /// left: what fits in the slot is taken from it, the rest is charged.
    pub(crate) fn charge_value(&self, size: usize, credit: &mut usize) -> Result<(), &'static str> {
        let inline = size.min(*credit);
        *credit -= inline;
        self.charge_memory(size - inline)
    }

    /// Charges `bytes` of memory.
    pub(crate) fn charge_memory(&self, bytes: usize) -> Result<(), &'static str> {
        let memory = self.memory.get().saturating_add(bytes);
        if memory > self.max_memory {
            return Err(self.refuse(TOO_BIG));
        }
        self.memory.set(memory);
        Ok(())
    }
}

/// One level of nesting, left when dropped.
pub(crate) struct DepthGuard<'a> {
    budget: &'a Budget,
}

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        self.budget.depth.set(self.budget.depth.get() - 1);
    }
}
