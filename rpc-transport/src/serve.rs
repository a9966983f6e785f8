//! `serve(listener, server)`: the accept loop, and graceful shutdown.
//!
//! Each accepted connection runs in its own task, so a connection that stalls (in its
//! preface, mid-frame, or by not reading) never delays another or the accept loop. Accept
//! errors that concern one connection are skipped; running out of file descriptors or
//! memory backs off and retries; only an error that means the listener itself is broken
//! ends `serve`.

use std::future::{Future, IntoFuture};
use std::io;
use std::pin::Pin;
use std::time::Duration;

use rpc_core::{Peer, Server, Shutdown};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::TaskTracker;

use crate::framed::framed;

/// A connection a [`Listener`] accepted: its two halves and who is at the other end.
#[derive(Debug)]
pub struct Accepted<R, W> {
    /// The reading half.
    pub reader: R,
    /// The writing half.
    pub writer: W,
    /// The remote end.
    pub peer: Peer,
}

/// A source of connections for [`serve`]: implemented for `tokio::net::TcpListener` and
/// `tokio::net::UnixListener`.
pub trait Listener: Send + 'static {
    /// The reading half of an accepted connection.
    type Reader: AsyncRead + Send + Unpin + 'static;
    /// The writing half of an accepted connection.
    type Writer: AsyncWrite + Send + Unpin + 'static;

    /// Accepts the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<Accepted<Self::Reader, Self::Writer>>> + Send;
}

/// Serves `server` on every connection `listener` accepts. Await it (it runs until the
/// listener fails), or call [`Serve::with_graceful_shutdown`] first.
///
/// ```no_run
/// # async fn example(server: rpc_core::Server) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
/// rpc_transport::serve(listener, server).await?;
/// # Ok(())
/// # }
/// ```
pub fn serve<L: Listener>(listener: L, server: Server) -> Serve<L> {
    Serve { listener, server }
}

/// The future of [`serve`]; see [`Serve::with_graceful_shutdown`].
#[derive(Debug)]
#[must_use = "`serve` does nothing until awaited"]
pub struct Serve<L> {
    listener: L,
    server: Server,
}

impl<L: Listener> Serve<L> {
    /// Stops accepting once `signal` resolves, then lets in-flight calls finish (up to the
    /// server's `shutdown_grace_period`), closes the connections and resolves to `Ok(())`.
    ///
    /// ```no_run
    /// # async fn example(server: rpc_core::Server) -> std::io::Result<()> {
    /// let listener = tokio::net::UnixListener::bind("/tmp/calc.sock")?;
    /// let signal = async { let _ = tokio::signal::ctrl_c().await; };
    /// rpc_transport::serve(listener, server).with_graceful_shutdown(signal).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<L, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        WithGracefulShutdown {
            listener: self.listener,
            server: self.server,
            signal,
        }
    }
}

impl<L: Listener> IntoFuture for Serve<L> {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'static>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(run(self.listener, self.server, std::future::pending()))
    }
}

/// The future of [`Serve::with_graceful_shutdown`].
#[derive(Debug)]
#[must_use = "`serve` does nothing until awaited"]
pub struct WithGracefulShutdown<L, F> {
    listener: L,
    server: Server,
    signal: F,
}

impl<L, F> IntoFuture for WithGracefulShutdown<L, F>
where
    L: Listener,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'static>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(run(self.listener, self.server, self.signal))
    }
}

/// Longest pause after running out of descriptors or memory.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

async fn run<L: Listener>(mut listener: L, server: Server, signal: impl Future<Output = ()> + Send) -> io::Result<()> {
    let shutdown = Shutdown::new();
    let connections = TaskTracker::new();
    let mut backoff = Duration::from_millis(5);
    tokio::pin!(signal);
    let outcome = loop {
        let accepted = tokio::select! {
            () = &mut signal => break Ok(()),
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(Accepted { reader, writer, peer }) => {
                backoff = Duration::from_millis(5);
                let config = server.config();
                let connection = framed(reader, writer, peer, config.max_frame_size, config.frame_timeout);
                let server = server.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move { server.serve_connection(connection, shutdown).await });
            }
            Err(error) => match classify_accept_error(&error) {
                AcceptError::ThisConnection => {
                    tracing::debug!(%error, "accept failed for one connection");
                }
                AcceptError::OutOfResources => {
                    tracing::warn!(%error, ?backoff, "accept failed; backing off");
                    tokio::select! {
                        () = &mut signal => break Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
                AcceptError::Listener => break Err(error),
            },
        }
    };
    drop(listener);
    shutdown.trigger();
    connections.close();
    connections.wait().await;
    outcome
}

enum AcceptError {
    /// The failure concerns the connection being accepted; the next one may be fine.
    ThisConnection,
    /// The process or system ran out of something; it may come back.
    OutOfResources,
    /// The listener itself is unusable.
    Listener,
}

fn classify_accept_error(error: &io::Error) -> AcceptError {
    use io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionAborted
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionRefused
        | ErrorKind::Interrupted
        | ErrorKind::WouldBlock
        | ErrorKind::TimedOut
        | ErrorKind::PermissionDenied => AcceptError::ThisConnection,
        ErrorKind::InvalidInput | ErrorKind::NotConnected | ErrorKind::Unsupported => AcceptError::Listener,
        // EMFILE, ENFILE, ENOBUFS, ENOMEM and anything unknown: keep serving, slowly.
        _ => AcceptError::OutOfResources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_is_retried() {
        let emfile = io::Error::from_raw_os_error(24);
        assert!(matches!(classify_accept_error(&emfile), AcceptError::OutOfResources));
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert!(matches!(classify_accept_error(&aborted), AcceptError::ThisConnection));
        let closed = io::Error::from(io::ErrorKind::InvalidInput);
        assert!(matches!(classify_accept_error(&closed), AcceptError::Listener));
    }
}
