//! How calls fail over HTTP: every `RpcError` as a Connect protocol error code, its HTTP
//! status, and a JSON body `{"code": "...", "message": "..."}`.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use rpc_core::RpcError;
use serde_json::json;

use crate::body::{full, HttpBody};

/// A Connect error: its code and HTTP status, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpError {
    pub(crate) code: &'static str,
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl HttpError {
    pub(crate) fn new(code: &'static str, status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            code,
            status,
            message: message.into(),
        }
    }

    /// The JSON body of the error.
    pub(crate) fn body(&self) -> Bytes {
        Bytes::from(json!({ "code": self.code, "message": self.message }).to_string())
    }

    /// The whole response.
    pub(crate) fn response(&self) -> Response<HttpBody> {
        let mut response = Response::new(full(self.body()));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl From<&RpcError> for HttpError {
    fn from(error: &RpcError) -> Self {
        let (code, status) = match error {
            RpcError::DeadlineExceeded { .. } => ("deadline_exceeded", StatusCode::GATEWAY_TIMEOUT),
            RpcError::Unauthenticated { .. } => ("unauthenticated", StatusCode::UNAUTHORIZED),
            RpcError::PermissionDenied { .. } => ("permission_denied", StatusCode::FORBIDDEN),
            RpcError::ResourceExhausted { .. } | RpcError::FrameTooLarge { .. } => {
                ("resource_exhausted", StatusCode::TOO_MANY_REQUESTS)
            }
            RpcError::Unavailable { .. } | RpcError::ConnectionClosed { .. } => {
                ("unavailable", StatusCode::SERVICE_UNAVAILABLE)
            }
            RpcError::UnknownService { .. } | RpcError::UnknownMethod { .. } => {
                ("unimplemented", StatusCode::NOT_IMPLEMENTED)
            }
            RpcError::Codec { .. } => ("invalid_argument", StatusCode::BAD_REQUEST),
            RpcError::Incompatible { .. } => ("failed_precondition", StatusCode::BAD_REQUEST),
            _ => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        };
        let message = match error {
            // The binary protocol keeps a panic's text in the server's log; so does HTTP.
            RpcError::HandlerPanicked { .. } => "the handler panicked".to_owned(),
            RpcError::Codec { message } => message.to_string(),
            RpcError::Internal { message } => message.to_string(),
            RpcError::Unauthenticated { message }
            | RpcError::PermissionDenied { message }
            | RpcError::ResourceExhausted { message } => message.to_string(),
            RpcError::Unavailable { reason } => reason.to_string(),
            other => other.to_string(),
        };
        HttpError::new(code, status, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_connect_codes_and_statuses() {
        let cases = [
            (RpcError::DeadlineExceeded {}, "deadline_exceeded", 504),
            (
                RpcError::Unauthenticated {
                    message: "who".into(),
                },
                "unauthenticated",
                401,
            ),
            (
                RpcError::PermissionDenied {
                    message: "no".into(),
                },
                "permission_denied",
                403,
            ),
            (
                RpcError::ResourceExhausted {
                    message: "full".into(),
                },
                "resource_exhausted",
                429,
            ),
            (
                RpcError::Unavailable {
                    reason: "draining".into(),
                },
                "unavailable",
                503,
            ),
            (
                RpcError::UnknownMethod {
                    service: "S".into(),
                    method: "m".into(),
                },
                "unimplemented",
                501,
            ),
            (
                RpcError::codec("argument `a`: bad"),
                "invalid_argument",
                400,
            ),
            (
                RpcError::HandlerPanicked { method: "m".into() },
                "internal",
                500,
            ),
        ];
        for (error, code, status) in cases {
            let http = HttpError::from(&error);
            assert_eq!((http.code, http.status.as_u16()), (code, status), "{error}");
        }
        let panicked = HttpError::from(&RpcError::HandlerPanicked { method: "m".into() });
        assert_eq!(panicked.message, "the handler panicked");
    }
}
