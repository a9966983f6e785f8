//! What a handler can learn about the call it serves: deadline, metadata and peer.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The remote end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Peer {
    /// A TCP peer at this address.
    Tcp(SocketAddr),
    /// A Unix socket peer.
    Unix {
        /// The peer's socket path, when it is bound to one (clients usually are not).
        path: Option<PathBuf>,
        /// The peer process's credentials, when the platform reports them.
        credentials: Option<UnixCredentials>,
    },
    /// A TLS peer over TCP.
    Tls {
        /// Its address.
        address: SocketAddr,
        /// The certificate chain it presented, leaf first, each certificate in DER; the
        /// handshake verified it against the configured trust roots. Empty when the peer
        /// presented none (a client, when the server does not ask for client certificates).
        certificates: Vec<Vec<u8>>,
    },
    /// The other end of an in-process loopback connection.
    Loopback,
    /// Any other transport, described by its own text.
    Other(Arc<str>),
}

/// The credentials of the process at the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixCredentials {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id, where the platform reports it.
    pub pid: Option<i32>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(address) => write!(f, "tcp://{address}"),
            Peer::Unix { path, credentials } => {
                match path {
                    Some(path) => write!(f, "unix://{}", path.display())?,
                    None => f.write_str("unix://(unnamed)")?,
                }
                if let Some(credentials) = credentials {
                    write!(f, " (uid {}", credentials.uid)?;
                    if let Some(pid) = credentials.pid {
                        write!(f, ", pid {pid}")?;
                    }
                    f.write_str(")")?;
                }
                Ok(())
            }
            Peer::Tls {
                address,
                certificates,
            } => {
                write!(f, "tls://{address}")?;
                if !certificates.is_empty() {
                    f.write_str(" (certified)")?;
                }
                Ok(())
            }
            Peer::Loopback => f.write_str("loopback"),
            Peer::Other(description) => f.write_str(description),
        }
    }
}

/// The context of one call on the server: its deadline, metadata and peer.
///
/// A handler gets it by taking `cx: &Context` as its first argument:
///
/// ```
/// use rpc_core::{service, Context};
///
/// #[service]
/// pub trait Greeter {
///     async fn hello(&self, cx: &Context, name: String) -> String;
/// }
///
/// struct English;
///
/// impl Greeter for English {
///     async fn hello(&self, cx: &Context, name: String) -> String {
///         let lang = cx.metadata("lang").unwrap_or("en");
///         format!("hello {name} from {} ({lang})", cx.peer())
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Context {
    deadline: Option<Instant>,
    metadata: Vec<(String, String)>,
    peer: Arc<Peer>,
    call_id: u32,
    /// The calling side of the connection, when the peer serves too.
    peer_link: Option<PeerLink>,
}

/// A connection's engine for calls to the peer, where both sides call. It is opaque here
/// (that engine sits above this module); `Context::peer_channel`, in `channel.rs`, makes a
/// `Channel` of it.
pub(crate) type PeerLink = Arc<dyn std::any::Any + Send + Sync>;

/// Metadata values (credentials, tokens) are never printed: `Debug` shows each key and the
/// length of its value.
impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("deadline", &self.deadline)
            .field("metadata", &RedactedMetadata(&self.metadata))
            .field("peer", &self.peer)
            .field("call_id", &self.call_id)
            .finish()
    }
}

/// Metadata as `Debug` shows it: each key, and only the length of its value.
pub(crate) struct RedactedMetadata<'a>(pub(crate) &'a [(String, String)]);

impl fmt::Debug for RedactedMetadata<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in self.0 {
            map.entry(key, &format_args!("<{} bytes>", value.len()));
        }
        map.finish()
    }
}

impl Context {
    /// A context for a call (used by the server; tests can build their own).
    pub fn new(peer: Arc<Peer>, call_id: u32) -> Self {
        Context {
            deadline: None,
            metadata: Vec::new(),
            peer,
            call_id,
            peer_link: None,
        }
    }

    /// This context with the link back to a peer that serves too.
    pub(crate) fn with_peer_link(mut self, link: Option<PeerLink>) -> Self {
        self.peer_link = link;
        self
    }

    /// The link back to the peer, when it serves too.
    pub(crate) fn peer_link(&self) -> Option<&PeerLink> {
        self.peer_link.as_ref()
    }

    /// This context with a deadline.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// This context with metadata pairs.
    pub fn with_metadata(mut self, metadata: Vec<(String, String)>) -> Self {
        self.metadata = metadata;
        self
    }

    /// When the caller stops waiting, if it set a deadline. The server drops the handler's
    /// future once it passes.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The value the caller attached under `key` with `with_metadata`, if any (the last one
    /// when it attached several).
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .rev()
            .find(|(candidate, _)| candidate == key)
            .map(|(_, value)| value.as_str())
    }

    /// Every metadata pair, in the order the caller attached them.
    pub fn metadata_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.metadata
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// The remote end of the connection that carried the call.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The call's id on its connection (for logs).
    pub fn call_id(&self) -> u32 {
        self.call_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_metadata_values() {
        let context = Context::new(Arc::new(Peer::Loopback), 7).with_metadata(vec![(
            "authorization".to_owned(),
            "Bearer secret-token".to_owned(),
        )]);
        let printed = format!("{context:?}");
        assert!(printed.contains("authorization"), "{printed}");
        assert!(printed.contains("<19 bytes>"), "{printed}");
        assert!(!printed.contains("secret-token"), "{printed}");
    }
}
