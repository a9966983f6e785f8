//! Call statuses: the status byte of RESPONSE and STREAM_END frames, and the one mapping
//! between statuses and [`RpcError`]s, in both directions.
//!
//! A side that ends a call with an error sends [`Status`] and a short text ([`from_error`],
//! or [`for_refusal`] for a hook's refusal, which keeps the text of unexpected errors out of
//! the answer); the other side turns them back into the error ([`to_error`]). The text of
//! `ResponseTooLarge` is `"<len> <max>"` in decimal, written and read only here.

use std::sync::Arc;

use crate::error::RpcError;

/// The status byte of a RESPONSE or STREAM_END frame: how a call (or a stream) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum Status {
    /// The handler returned; the payload is its postcard-encoded result.
    Ok = 0,
    /// No such service on this server.
    UnknownService = 1,
    /// No such method in the service.
    UnknownMethod = 2,
    /// The request's arguments did not decode.
    BadRequest = 3,
    /// The handler panicked.
    HandlerPanicked = 4,
    /// The deadline passed before the handler finished.
    DeadlineExceeded = 5,
    /// The encoded result was larger than the server's maximum frame.
    ResponseTooLarge = 6,
    /// The server is shutting down and did not run the call.
    Unavailable = 7,
    /// A server limit refused the call.
    ResourceExhausted = 8,
    /// Any other server-side failure.
    Internal = 9,
    /// An interceptor found no acceptable credentials.
    Unauthenticated = 10,
    /// An interceptor refused the caller this call.
    PermissionDenied = 11,
    /// The client was built against a different version of this method (its argument or
    /// result types differ).
    Incompatible = 12,
}

impl Status {
    pub(crate) fn from_byte(byte: u8) -> Option<Status> {
        Some(match byte {
            0 => Status::Ok,
            1 => Status::UnknownService,
            2 => Status::UnknownMethod,
            3 => Status::BadRequest,
            4 => Status::HandlerPanicked,
            5 => Status::DeadlineExceeded,
            6 => Status::ResponseTooLarge,
            7 => Status::Unavailable,
            8 => Status::ResourceExhausted,
            9 => Status::Internal,
            10 => Status::Unauthenticated,
            11 => Status::PermissionDenied,
            12 => Status::Incompatible,
            _ => return None,
        })
    }
}

/// The error a non-OK status (of a response or a stream's end) stands for, for a call to
/// `service.method` (names may be empty where the side reading the status does not know
/// them). `text` is the frame's payload.
pub(crate) fn to_error(service: &str, method: &str, status: Status, text: &[u8]) -> RpcError {
    let message = || -> Arc<str> { String::from_utf8_lossy(text).into() };
    match status {
        Status::Ok => RpcError::protocol("an OK status where an error was expected"),
        Status::UnknownService => RpcError::UnknownService {
            service: service.into(),
        },
        Status::UnknownMethod => RpcError::UnknownMethod {
            service: service.into(),
            method: method.into(),
        },
        Status::BadRequest => RpcError::Codec { message: message() },
        Status::HandlerPanicked => RpcError::HandlerPanicked {
            method: method.into(),
        },
        Status::DeadlineExceeded => RpcError::DeadlineExceeded {},
        Status::ResponseTooLarge => {
            let (len, max) = parse_too_large(text);
            RpcError::FrameTooLarge { len, max }
        }
        Status::Unavailable => RpcError::Unavailable { reason: message() },
        Status::ResourceExhausted => RpcError::ResourceExhausted { message: message() },
        Status::Internal => RpcError::Internal { message: message() },
        Status::Unauthenticated => RpcError::Unauthenticated { message: message() },
        Status::PermissionDenied => RpcError::PermissionDenied { message: message() },
        Status::Incompatible => RpcError::Incompatible {
            service: service.into(),
            method: method.into(),
            reason: "client and server were built with different argument or result types".into(),
        },
    }
}

/// The status and text that carry `error` to the peer. Errors that only mean something on
/// this side (the connection, I/O, the codec, a protocol breach) are `Internal`, with the
/// error's own words.
pub(crate) fn from_error(error: &RpcError) -> (Status, String) {
    match error {
        RpcError::DeadlineExceeded { .. } => (Status::DeadlineExceeded, String::new()),
        RpcError::HandlerPanicked { .. } => (Status::HandlerPanicked, String::new()),
        RpcError::UnknownService { .. } => (Status::UnknownService, String::new()),
        RpcError::UnknownMethod { .. } => (Status::UnknownMethod, String::new()),
        RpcError::Incompatible { .. } => (Status::Incompatible, String::new()),
        RpcError::FrameTooLarge { len, max } => {
            (Status::ResponseTooLarge, too_large_text(*len, *max))
        }
        RpcError::Unavailable { reason } => (Status::Unavailable, reason.to_string()),
        RpcError::ResourceExhausted { message } => (Status::ResourceExhausted, message.to_string()),
        RpcError::Unauthenticated { message } => (Status::Unauthenticated, message.to_string()),
        RpcError::PermissionDenied { message } => (Status::PermissionDenied, message.to_string()),
        RpcError::Internal { message } => (Status::Internal, message.to_string()),
        other => (Status::Internal, other.to_string()),
    }
}

/// The status and text that end a stream whose producer failed with `error`: as
/// [`from_error`], except that an error with no status of its own is `Internal` with a
/// short safe text (its own words stay in the log).
pub(crate) fn for_stream_end(error: &RpcError) -> (Status, String) {
    match from_error(error) {
        (Status::Internal, _) => {
            tracing::info!(%error, "a stream producer failed");
            (Status::Internal, "the stream failed".to_owned())
        }
        other => other,
    }
}

/// The status and text a call refused by a server-side hook (an interceptor, middleware) is
/// answered with. Refusals a caller can act on travel as themselves; any other error is
/// answered `Internal` without its text, which stays in the server's log.
pub(crate) fn for_refusal(error: &RpcError) -> (Status, String) {
    match error {
        RpcError::Unauthenticated { .. }
        | RpcError::PermissionDenied { .. }
        | RpcError::ResourceExhausted { .. }
        | RpcError::Unavailable { .. }
        | RpcError::DeadlineExceeded { .. } => from_error(error),
        other => {
            tracing::info!(error = %other, "a server hook refused a call");
            (Status::Internal, "the call was refused".to_owned())
        }
    }
}

/// The text of a `ResponseTooLarge` status: `"<len> <max>"` in decimal.
pub(crate) fn too_large_text(len: u64, max: u64) -> String {
    format!("{len} {max}")
}

/// `(len, max)` from a `ResponseTooLarge` text; zeros where it is malformed.
fn parse_too_large(text: &[u8]) -> (u64, u64) {
    let text = String::from_utf8_lossy(text);
    let mut numbers = text.split(' ').map(|number| number.parse().unwrap_or(0));
    let len = numbers.next().unwrap_or(0);
    let max = numbers.next().unwrap_or(0);
    (len, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_with_a_status_survives_the_round_trip() {
        let errors = [
            RpcError::DeadlineExceeded {},
            RpcError::FrameTooLarge { len: 20, max: 10 },
            RpcError::Unavailable {
                reason: "draining".into(),
            },
            RpcError::ResourceExhausted {
                message: "full".into(),
            },
            RpcError::Unauthenticated {
                message: "who".into(),
            },
            RpcError::PermissionDenied {
                message: "no".into(),
            },
            RpcError::Internal {
                message: "oops".into(),
            },
        ];
        for error in errors {
            let (status, text) = from_error(&error);
            let back = to_error("S", "m", status, text.as_bytes());
            assert_eq!(back.to_string(), error.to_string(), "{status:?}");
        }
    }

    #[test]
    fn names_come_from_the_side_that_reads_the_status() {
        let (status, _) = from_error(&RpcError::UnknownMethod {
            service: "theirs".into(),
            method: "theirs".into(),
        });
        let error = to_error("Calc", "add", status, b"");
        assert_eq!(error.to_string(), "unknown method `Calc.add`");
    }

    #[test]
    fn unexpected_refusals_keep_their_text_to_the_server() {
        let (status, text) = for_refusal(&RpcError::codec("secret detail"));
        assert_eq!(status, Status::Internal);
        assert!(!text.contains("secret"));
        let (status, text) = for_refusal(&RpcError::PermissionDenied {
            message: "read only".into(),
        });
        assert_eq!(
            (status, text.as_str()),
            (Status::PermissionDenied, "read only")
        );
    }

    #[test]
    fn a_malformed_too_large_text_reads_as_zeros() {
        assert_eq!(parse_too_large(b"12 oops"), (12, 0));
        assert_eq!(parse_too_large(&too_large_text(7, 3).into_bytes()), (7, 3));
    }
}
