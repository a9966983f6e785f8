//! [`MethodTypes`]: the types one method carries, named once.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The types one method carries, named once by generated code (on a marker type per
/// method), so that a type serde cannot carry is reported once, where the method's types
/// are named, and the generic helpers below need no bounds of their own.
pub trait MethodTypes: 'static {
    /// The arguments as they travel: a tuple (`Vec<u8>` as `ByteBuf`). `Sync` because a
    /// call's future borrows them until they are encoded.
    type Args: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The result as it travels (`()` for a method that returns a stream).
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// The items of the request stream (`()` when the method takes none).
    type InputItem: Serialize + DeserializeOwned + Send + 'static;
    /// The items of the response stream (`()` when the method returns none).
    type OutputItem: Serialize + DeserializeOwned + Send + 'static;
    /// Whether an argument is `bytes::Bytes` (as `SharedBytes`): the server then decodes
    /// the arguments so that it is a slice of the received frame. Calls without one skip
    /// that step's cost.
    const SHARES_BYTES: bool = false;
}

/// How a method is called: whether it takes a request stream and returns a response
/// stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallKind {
    /// Arguments in, one result out.
    Unary,
    /// Arguments in, a stream of results out.
    ServerStreaming,
    /// Arguments and a stream in, one result out.
    ClientStreaming,
    /// Arguments and a stream in, a stream out.
    Bidirectional,
}

impl CallKind {
    /// The kind of a method that takes a request stream or not, and returns a response
    /// stream or not.
    pub const fn of(takes_stream: bool, returns_stream: bool) -> CallKind {
        match (takes_stream, returns_stream) {
            (false, false) => CallKind::Unary,
            (false, true) => CallKind::ServerStreaming,
            (true, false) => CallKind::ClientStreaming,
            (true, true) => CallKind::Bidirectional,
        }
    }
}
