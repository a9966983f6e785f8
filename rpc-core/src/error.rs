//! `RpcError`: every way a call can fail, on either side of the connection.
//!
//! Application errors are not here: they are ordinary values in the method's return type
//! (`Result<T, MyError>`) and travel inside `Ok`. `RpcError` is for what the toolkit itself
//! reports: the call never reached a handler, never came back, or could not be encoded.

use std::sync::Arc;

/// Why a call failed, as seen by the caller (or by a handler's connection on the server).
///
/// Match variants with `{ .. }` (`RpcError::DeadlineExceeded { .. }`): any of them may
/// gain fields. The `Display` text is for people; do not parse it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The call's deadline passed before its response arrived. The server abandons the
    /// handler once the deadline passes too.
    #[error("deadline exceeded")]
    DeadlineExceeded {},

    /// The connection ended before the response arrived (peer closed it, crashed, or was
    /// cut off), or the channel was already closed when the call started.
    #[error("connection closed: {reason}")]
    ConnectionClosed {
        /// What ended the connection, as far as this side knows.
        reason: Arc<str>,
    },

    /// The server does not serve the service this call was addressed to.
    #[error("unknown service `{service}`")]
    UnknownService {
        /// The service name the client used.
        service: Arc<str>,
    },

    /// The service exists on the server but has no method with this name.
    #[error("unknown method `{service}.{method}`")]
    UnknownMethod {
        /// The service name the client used.
        service: Arc<str>,
        /// The method name the client used.
        method: Arc<str>,
    },

    /// The client was built against a different version of this method than the server
    /// serves: their argument or result types differ, so the call was not run (the
    /// connection's handshake compares each method's fingerprint). Other methods of the
    /// service, and methods only one side has, are not affected.
    #[error("incompatible method `{service}.{method}`: {reason}")]
    Incompatible {
        /// The service name.
        service: Arc<str>,
        /// The method whose signature differs.
        method: Arc<str>,
        /// The first difference, where both sides' shapes are known ("argument `order`:
        /// struct `Order` has 5 fields on the server, 4 here").
        reason: Arc<str>,
    },

    /// The handler of this call panicked. The connection and every other call carry on; the
    /// panic message stays in the server's log and is not sent to the peer.
    #[error("the handler of `{method}` panicked")]
    HandlerPanicked {
        /// The method whose handler panicked (empty when not known to this side).
        method: Arc<str>,
    },

    /// A frame was larger than the configured maximum. When raised for a request, nothing
    /// was sent; when raised by a reader, the connection that carried it is closed.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The size of the frame (or, when the peer sent it, the size its header claimed).
        len: u64,
        /// The limit in force.
        max: u64,
    },

    /// The server is shutting down and did not start this call; it is safe to retry it
    /// elsewhere.
    #[error("server unavailable: {reason}")]
    Unavailable {
        /// Why the server refused the call.
        reason: Arc<str>,
    },

    /// The server refused the call because a limit was reached (for example metadata
    /// larger than the server accepts).
    #[error("resource exhausted: {message}")]
    ResourceExhausted {
        /// Which limit was reached.
        message: Arc<str>,
    },

    /// The peer broke the wire protocol (bad preface, malformed frame, unexpected frame).
    /// The connection is closed.
    #[error("protocol error: {message}")]
    Protocol {
        /// What was wrong.
        message: Arc<str>,
    },

    /// An I/O error on the transport.
    #[error("i/o error: {source}")]
    Io {
        /// The underlying error, shared because one connection error fails many calls.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// A value could not be serialized or deserialized (arguments on the server, results on
    /// the client, or either side locally).
    #[error("codec error: {message}")]
    Codec {
        /// What the codec reported.
        message: Arc<str>,
    },

    /// The server refused the call for want of acceptable credentials (an interceptor's
    /// verdict).
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// Why, as the server put it.
        message: Arc<str>,
    },

    /// The server refused this caller this call (an interceptor's verdict).
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// Why, as the server put it.
        message: Arc<str>,
    },

    /// The server hit an error it does not describe to peers.
    #[error("internal server error: {message}")]
    Internal {
        /// A short, safe description.
        message: Arc<str>,
    },
}

impl RpcError {
    /// A `ConnectionClosed` error with the given reason.
    pub fn connection_closed(reason: impl Into<Arc<str>>) -> Self {
        RpcError::ConnectionClosed {
            reason: reason.into(),
        }
    }

    /// A `Protocol` error with the given message.
    pub fn protocol(message: impl Into<Arc<str>>) -> Self {
        RpcError::Protocol {
            message: message.into(),
        }
    }

    /// A `Codec` error with the given message.
    pub fn codec(message: impl Into<Arc<str>>) -> Self {
        RpcError::Codec {
            message: message.into(),
        }
    }

    /// Whether the error means the connection that carried the call is gone (so later calls
    /// on the same channel fail as well).
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            RpcError::ConnectionClosed { .. } | RpcError::Io { .. } | RpcError::Protocol { .. }
        )
    }
}

/// I/O errors that mean the peer or the path to it went away become `ConnectionClosed`
/// (with the OS's words as the reason); every other I/O error stays `Io`, except one that
/// carries an `RpcError` (`io::Error::other(rpc_error)`), which becomes that error: the way
/// a transport names what a failed read or write means, such as a TLS server's alert
/// refusing the client's certificate (`Unauthenticated`).
impl From<std::io::Error> for RpcError {
    fn from(source: std::io::Error) -> Self {
        use std::io::ErrorKind;
        let source = match source.downcast::<RpcError>() {
            Ok(carried) => return carried,
            Err(source) => source,
        };
        match source.kind() {
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
            | ErrorKind::NotConnected => RpcError::connection_closed(source.to_string()),
            _ => RpcError::Io {
                source: Arc::new(source),
            },
        }
    }
}
