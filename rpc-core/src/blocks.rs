//! Large byte blocks that leave beside the frame buffer instead of being copied into it.
//!
//! A `bytes::Bytes` argument or result (`codec::SharedBytes`) of at least [`MIN_BLOCK`]
//! bytes, encoded into a connection's outgoing buffer, is not copied there: the buffer gets
//! everything around it (the frame header, the block's length prefix, the rest of the
//! value), and the block itself is set aside with the offset it belongs at. The writer
//! then sends the buffer's pieces and the blocks in order with one vectored write, so the
//! bytes on the wire are exactly those of a copied block.
//!
//! The encoder and the frame builders cannot be handed the list of blocks through their
//! signatures (serde's `Serialize` and every frame builder write to a `BytesMut`), so the
//! outbox opens a [`SettingAside`] scope on its thread for the buffer it encodes into.
//! Only that buffer sets blocks aside: encoding the same value anywhere else (a separate
//! buffer, a length count, JSON) copies as before.

use std::cell::{Cell, RefCell};

use bytes::{Bytes, BytesMut};

/// Blocks smaller than this are copied: below it, a copy costs less than one more segment
/// in a vectored write.
pub(crate) const MIN_BLOCK: usize = 16 * 1024;

/// A block set aside: its bytes go out right before the buffer's byte at `at`.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) at: usize,
    pub(crate) bytes: Bytes,
}

/// The blocks set aside from one buffer, in order of their offsets. A pointer wide, and
/// nothing allocated until a first block is set aside: every connection holds a few.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    #[allow(
        clippy::box_collection,
        reason = "one pointer instead of three while unused, in every connection's outbox"
    )]
    list: Option<Box<Vec<Block>>>,
}

impl Blocks {
    const fn new() -> Blocks {
        Blocks { list: None }
    }

    /// Bytes in all the blocks.
    pub(crate) fn len(&self) -> usize {
        self.as_slice().iter().map(|block| block.bytes.len()).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    pub(crate) fn as_slice(&self) -> &[Block] {
        self.list.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Forgets every block (keeping the room for the next ones).
    pub(crate) fn clear(&mut self) {
        if let Some(list) = &mut self.list {
            list.clear();
        }
    }

    /// Moves the blocks of `other` behind these.
    fn append(&mut self, other: &mut Blocks) {
        if let Some(others) = other.list.as_mut().filter(|others| !others.is_empty()) {
            self.list.get_or_insert_with(Box::default).append(others);
        }
    }

    fn push(&mut self, block: Block) {
        self.list.get_or_insert_with(Box::default).push(block);
    }

    /// Bytes of the blocks after `offset` (a block at `offset` itself goes before that
    /// byte: it ends what came before).
    fn len_after(&self, offset: usize) -> usize {
        self.as_slice()
            .iter()
            .rev()
            .take_while(|block| block.at > offset)
            .map(|block| block.bytes.len())
            .sum()
    }

    /// Drops the blocks after `offset` (the buffer is cut back to `offset` bytes).
    fn truncate(&mut self, offset: usize) {
        if let Some(list) = &mut self.list {
            while list.last().is_some_and(|block| block.at > offset) {
                list.pop();
            }
        }
    }
}

/// The blocks set aside in the open scope, and the block on offer.
struct ScopeBlocks {
    blocks: Blocks,
    /// The block a `SharedBytes` is serializing now, for the encoder to take.
    offered: Option<Bytes>,
}

thread_local! {
    /// The address of the open scope's buffer (never dereferenced: only compared), 0 when
    /// no scope is open. Plain cells, so that frames without blocks pay a read or two.
    static SCOPE_BUF: Cell<usize> = const { Cell::new(0) };
    /// Whether the open scope has set blocks aside.
    static HAS_BLOCKS: Cell<bool> = const { Cell::new(false) };
    static SCOPE: RefCell<ScopeBlocks> = const {
        RefCell::new(ScopeBlocks {
            blocks: Blocks::new(),
            offered: None,
        })
    };
}

fn address(buf: &BytesMut) -> usize {
    buf as *const BytesMut as usize
}

/// Whether `buf` is the open scope's buffer.
fn is_scope_buf(buf: &BytesMut) -> bool {
    SCOPE_BUF.get() == address(buf)
}

/// While it lives, large blocks encoded into one buffer on this thread are set aside; when
/// it drops (also when the encoder panics) they are added to a [`Blocks`].
pub(crate) struct SettingAside<'a> {
    blocks: &'a mut Blocks,
    /// `false` for a scope opened inside another, which sets nothing aside.
    open: bool,
}

impl<'a> SettingAside<'a> {
    /// Opens the scope for `buf`, adding to `blocks`. Inside an open scope, the new one
    /// sets nothing aside (its blocks are copied).
    pub(crate) fn open(buf: &BytesMut, blocks: &'a mut Blocks) -> SettingAside<'a> {
        let open = SCOPE_BUF.get() == 0;
        if open {
            SCOPE_BUF.set(address(buf));
        }
        SettingAside { blocks, open }
    }
}

impl Drop for SettingAside<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        SCOPE_BUF.set(0);
        if HAS_BLOCKS.replace(false) {
            SCOPE.with(|scope| {
                let mut scope = scope.borrow_mut();
                scope.offered = None;
                self.blocks.append(&mut scope.blocks);
            });
        }
    }
}

/// Offers `bytes` to be set aside by the encoder that writes them next; withdrawn when the
/// returned guard drops. Does nothing for small blocks or outside a scope.
pub(crate) fn offer(bytes: &Bytes) -> Offer {
    if bytes.len() < MIN_BLOCK || SCOPE_BUF.get() == 0 {
        return Offer(false);
    }
    SCOPE.with(|scope| scope.borrow_mut().offered = Some(bytes.clone()));
    Offer(true)
}

/// Withdraws an [`offer`] when dropped.
#[must_use = "the offer lasts as long as this guard"]
pub(crate) struct Offer(bool);

impl Drop for Offer {
    fn drop(&mut self) {
        if self.0 {
            SCOPE.with(|scope| scope.borrow_mut().offered = None);
        }
    }
}

/// Sets `data` aside instead of appending it to `buf`, when it is the block on offer and
/// `buf` is the buffer of the open scope; `false` (append it) otherwise.
pub(crate) fn set_aside(buf: &BytesMut, data: &[u8]) -> bool {
    if data.len() < MIN_BLOCK || !is_scope_buf(buf) {
        return false;
    }
    SCOPE.with(|scope| {
        let mut scope = scope.borrow_mut();
        let is_offered = scope.offered.as_ref().is_some_and(|offered| {
            offered.as_ptr() == data.as_ptr() && offered.len() == data.len()
        });
        let Some(bytes) = scope.offered.take_if(|_| is_offered) else {
            return false;
        };
        push(&mut scope, buf, bytes);
        true
    })
}

/// Appends `bytes` to `buf`, or sets it aside when it is large and `buf` is the buffer of
/// the open scope (a stream item's piece, already a slice of its encoding).
pub(crate) fn append(buf: &mut BytesMut, bytes: &Bytes) {
    if bytes.len() < MIN_BLOCK || !is_scope_buf(buf) {
        buf.extend_from_slice(bytes);
        return;
    }
    SCOPE.with(|scope| push(&mut scope.borrow_mut(), buf, bytes.clone()));
}

/// Sets `bytes` aside in the open scope, to go out before `buf`'s next byte.
fn push(scope: &mut ScopeBlocks, buf: &BytesMut, bytes: Bytes) {
    scope.blocks.push(Block {
        at: buf.len(),
        bytes,
    });
    HAS_BLOCKS.set(true);
}

/// Bytes set aside from `buf` after `offset`: what a frame or value that started at
/// `offset` holds beyond what `buf` does (its own header or length prefix comes first, so
/// a block at `offset` itself belongs to what came before).
pub(crate) fn set_aside_after(buf: &BytesMut, offset: usize) -> usize {
    with_blocks_of(buf, |blocks| blocks.len_after(offset)).unwrap_or(0)
}

/// Forgets the blocks set aside from `buf` after `offset` (`buf` is being cut back to
/// `offset` bytes).
pub(crate) fn truncate(buf: &BytesMut, offset: usize) {
    with_blocks_of(buf, |blocks| blocks.truncate(offset));
}

/// Runs `f` on the blocks set aside from `buf`, if it is the open scope's buffer and has
/// any.
fn with_blocks_of<T>(buf: &BytesMut, f: impl FnOnce(&mut Blocks) -> T) -> Option<T> {
    if !HAS_BLOCKS.get() || !is_scope_buf(buf) {
        return None;
    }
    Some(SCOPE.with(|scope| f(&mut scope.borrow_mut().blocks)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(len: usize) -> Bytes {
        Bytes::from(vec![7u8; len])
    }

    #[test]
    fn only_the_offered_block_into_the_scopes_buffer_is_set_aside() {
        let mut buf = BytesMut::from(&b"head"[..]);
        let mut other = BytesMut::new();
        let mut blocks = Blocks::default();
        let large = block(MIN_BLOCK);
        {
            let _scope = SettingAside::open(&buf, &mut blocks);
            // Not offered: copied.
            assert!(!set_aside(&buf, &large));
            let _offer = offer(&large);
            // Another buffer: copied.
            assert!(!set_aside(&other, &large));
            // Other bytes than the offered ones: copied.
            assert!(!set_aside(&buf, &block(MIN_BLOCK)));
            assert!(set_aside(&buf, &large));
            // Taken once.
            assert!(!set_aside(&buf, &large));
            other.extend_from_slice(b"x");
        }
        assert_eq!(blocks.as_slice().len(), 1);
        assert_eq!(blocks.as_slice()[0].at, 4);
        assert_eq!(blocks.len(), MIN_BLOCK);
        // Outside the scope nothing is set aside.
        let _offer = offer(&large);
        assert!(!set_aside(&buf, &large));
        buf.clear();
    }

    #[test]
    fn small_blocks_are_copied() {
        let mut buf = BytesMut::new();
        let mut blocks = Blocks::default();
        {
            let _scope = SettingAside::open(&buf, &mut blocks);
            append(&mut buf, &block(MIN_BLOCK - 1));
            append(&mut buf, &block(MIN_BLOCK));
        }
        assert_eq!(buf.len(), MIN_BLOCK - 1);
        assert_eq!(blocks.len(), MIN_BLOCK);
    }

    #[test]
    fn a_truncated_frame_forgets_its_blocks_and_no_others() {
        let mut buf = BytesMut::new();
        let mut blocks = Blocks::default();
        {
            let _scope = SettingAside::open(&buf, &mut blocks);
            // A first frame ending with a block, so the block sits where frame two begins.
            buf.extend_from_slice(b"frame one");
            append(&mut buf, &block(MIN_BLOCK));
            let two = buf.len();
            buf.extend_from_slice(b"frame two");
            append(&mut buf, &block(MIN_BLOCK + 1));
            assert_eq!(set_aside_after(&buf, 0), 2 * MIN_BLOCK + 1);
            assert_eq!(set_aside_after(&buf, two), MIN_BLOCK + 1);
            buf.truncate(two);
            truncate(&buf, two);
            assert_eq!(set_aside_after(&buf, 0), MIN_BLOCK);
        }
        assert_eq!(blocks.as_slice().len(), 1);
        assert_eq!(blocks.as_slice()[0].at, 9);
        assert_eq!(blocks.len(), MIN_BLOCK);
    }

    #[test]
    fn a_panicking_encoder_still_hands_the_blocks_back() {
        let buf = BytesMut::new();
        let mut blocks = Blocks::default();
        let large = block(MIN_BLOCK);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _scope = SettingAside::open(&buf, &mut blocks);
            let _offer = offer(&large);
            assert!(set_aside(&buf, &large));
            panic!("encoder failed");
        }));
        assert!(panicked.is_err());
        assert_eq!(blocks.len(), MIN_BLOCK);
        assert_eq!(SCOPE_BUF.get(), 0, "the scope is closed");
        assert!(!HAS_BLOCKS.get());
    }
}
