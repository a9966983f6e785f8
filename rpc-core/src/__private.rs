//! Everything generated code names, in one place, so the macro reaches the runtime through
//! `::rpc_core::__private` only. Not public API: it changes with the macro.

pub use core::future::Future;
pub use core::marker::{Send, Sync};
pub use core::option::Option;
pub use core::pin::Pin;
pub use core::result::Result;
pub use std::boxed::Box;
pub use std::string::String;
pub use std::sync::Arc;
pub use std::time::{Duration, Instant};

pub use crate::channel::{CallOptions, Channel, MethodSpec};
pub use crate::codec::{ByteBuf, ByteSlice};
pub use crate::context::Context;
pub use crate::dispatch::{Dispatch, HandlerFuture, IncomingRequest, Reply};
pub use crate::error::RpcError;

/// The error a generated dispatcher returns for a method id it does not know.
pub fn unknown_method(service: &'static str, method_id: u32) -> RpcError {
    RpcError::UnknownMethod {
        service: service.into(),
        method: std::format!("#{method_id:08x}").into(),
    }
}

pub use core::clone::Clone;
pub use core::convert::Into;
pub use core::default::Default;
pub use core::fmt::{Debug, Formatter, Result as FmtResult};
