//! Length-delimited framing over any `AsyncRead`/`AsyncWrite`: how bytes move.
//!
//! [`FramedReader`] reads in chunks and splits whole frames out of its buffer in place with
//! `rpc_core::transport::FrameDecoder`. It grows the buffer by what actually arrives (never by what
//! a length prefix claims, and never ahead by more than the peer has sent), refuses an
//! oversized length from its four bytes, gives a started frame `frame_timeout` to complete,
//! and on a server charges its buffer to the server's one cap on buffered bytes.
//! [`FramedWriter`] writes the already-framed batches the connection drivers hand it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rpc_core::transport::{BufferCharge, Connection, FrameDecoder, FrameRead, FrameWrite};
use rpc_core::{Channel, ChannelConfig, Peer, RpcError, Server};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The least a read asks the buffer to have room for: what an idle connection holds.
const MIN_READ: usize = 256;

/// The most a read of small frames asks room for, once reads keep filling what they had
/// (a large frame's reads ask for the frame, within what the peer has sent).
const MAX_READ: usize = 64 * 1024;

/// The size of the read that waits for the next frame once the buffer's room is used up
/// (see `FramedReader::fill_from_probe`): enough for a small frame whole.
const PROBE_READ: usize = 64;

/// What a buffer of `capacity` bytes is charged to the server's cap when its reads of small
/// frames ask for `read_size`: what it holds beyond that. Every connection may read small
/// frames whatever the others hold (the number of connections has its own cap); what a cap
/// on buffered bytes must stop is many large frames arriving slowly at once.
fn charged(capacity: usize, read_size: usize) -> usize {
    capacity.saturating_sub(read_size)
}

/// Reads frames from an `AsyncRead`.
#[derive(Debug)]
pub struct FramedReader<R> {
    io: R,
    buf: BytesMut,
    decoder: FrameDecoder,
    frame_timeout: Duration,
    /// When the bytes of the frame now at the start of `buf` began to arrive.
    partial_since: Option<Instant>,
    /// Bytes received on this connection so far: the credit for reserving ahead. A length
    /// prefix is only a claim, so it buys room only up to what the peer has already paid
    /// for with bytes actually sent (a peer that has sent 10 MiB may have up to 10 MiB
    /// reserved for its next frame, which then arrives without the buffer being grown, and
    /// copied, step by step; a bare preface and a length prefix buy one small read).
    received: usize,
    /// What the buffer holds against the server's cap on buffered bytes, if any.
    charge: Option<BufferCharge>,
    /// The room the next read of small frames asks for: it starts at `MIN_READ`, doubles
    /// (up to `MAX_READ`) after a read that filled all the room it had, and halves after one
    /// that used less than a quarter, so an idle connection holds little and a busy one
    /// reads in few calls.
    read_size: usize,
}

impl<R: AsyncRead + Send + Unpin + 'static> FramedReader<R> {
    /// A reader refusing frames over `max_frame` bytes, whose frames must complete within
    /// `frame_timeout` of their first byte.
    pub fn new(io: R, max_frame: usize, frame_timeout: Duration) -> Self {
        FramedReader {
            io,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(max_frame),
            frame_timeout,
            partial_since: None,
            received: 0,
            charge: None,
            read_size: MIN_READ,
        }
    }

    /// Charges this reader's buffer to `charge` (a server's
    /// [`BufferBudget`](rpc_core::transport::BufferBudget)): a read that would take the
    /// budget past its cap fails with `ResourceExhausted` instead.
    pub fn with_charge(mut self, charge: BufferCharge) -> Self {
        self.charge = Some(charge);
        self
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> Result<usize, RpcError> {
        let missing = self.decoder.bytes_missing(&self.buf);
        let spare = self.buf.capacity() - self.buf.len();
        // Read into the room left behind the frames already split off while there is some:
        // growing the buffer while those frames are still alive means a new allocation.
        if spare < missing.max(self.read_size / 8) {
            if self.buf.is_empty() {
                return self.fill_from_probe().await;
            }
            self.make_room(missing)?;
        }
        self.charge_capacity()?;
        let room = self.buf.capacity() - self.buf.len();
        let read = self.io.read_buf(&mut self.buf).await?;
        self.received = self.received.saturating_add(read);
        if read >= room {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        } else if read < room / 4 {
            self.read_size = (self.read_size / 2).max(MIN_READ);
        }
        Ok(read)
    }

    /// Reads the start of the next frame into a small buffer on the stack, and only then
    /// makes room for it. The room left is used up but no part of a frame is waiting, so
    /// this read usually waits for the peer, and meanwhile the frames split off before it
    /// (a response its caller has not yet taken) are dropped: the buffer is then reclaimed
    /// in place rather than replaced by a new allocation.
    async fn fill_from_probe(&mut self) -> Result<usize, RpcError> {
        std::future::poll_fn(|cx| {
            // On the stack of each poll, not in the reader's future: a read that is not
            // ready has written nothing to it, and one that is is copied out at once.
            let mut probe = [0; PROBE_READ];
            let mut probe = ReadBuf::new(&mut probe);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut probe))?;
            let read = probe.filled();
            self.received = self.received.saturating_add(read.len());
            if !read.is_empty() {
                self.make_room(read.len())?;
                self.buf.extend_from_slice(read);
                self.charge_capacity()?;
            }
            Poll::Ready(Ok(read.len()))
        })
        .await
    }

    /// Makes room for the next read when what is left is too little: for the `missing`
    /// bytes of a frame, within what the peer has sent, and at least a read of small frames.
    fn make_room(&mut self, missing: usize) -> Result<(), RpcError> {
        let read_size = self.read_size;
        let read_ahead = self
            .received
            .clamp(read_size, self.decoder.max_frame().max(read_size));
        let wanted = missing.clamp(read_size, read_ahead);
        if let Some(charge) = &mut self.charge {
            // Charged before the memory is taken; a refusal leaves the buffer as it is.
            charge.set(charged(self.buf.len() + wanted, read_size))?;
        }
        self.buf.reserve(wanted);
        Ok(())
    }

    /// Charges what the buffer really holds (reserving may have taken more than asked, or
    /// freed the room of frames already split off).
    fn charge_capacity(&mut self) -> Result<(), RpcError> {
        if let Some(charge) = &mut self.charge {
            charge.set(charged(self.buf.capacity(), self.read_size))?;
        }
        Ok(())
    }
}

impl<R: AsyncRead + Send + Unpin + 'static> FrameRead for FramedReader<R> {
    async fn read_preface(&mut self) -> Result<(), RpcError> {
        while !self.decoder.decode_preface(&mut self.buf)? {
            if self.fill().await? == 0 {
                return Err(RpcError::connection_closed(
                    "the peer closed the connection before its preface",
                ));
            }
        }
        Ok(())
    }

    fn preface_flags(&self) -> u8 {
        self.decoder.preface_flags()
    }

    fn has_buffered_bytes(&self) -> bool {
        !self.buf.is_empty()
    }

    fn buffered_frame(&mut self) -> Result<Option<Bytes>, RpcError> {
        let frame = self.decoder.decode(&mut self.buf)?;
        if frame.is_some() {
            self.partial_since = None;
        }
        Ok(frame)
    }

    /// Cancel safe: the bytes read so far stay in the reader, and so does the time the
    /// current frame started, so a dropped call neither loses data nor resets the timeout.
    async fn read_frame(&mut self) -> Result<Option<Bytes>, RpcError> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(Some(frame));
            }
            let read = if self.buf.is_empty() {
                self.partial_since = None;
                self.fill().await?
            } else {
                let since = *self.partial_since.get_or_insert_with(Instant::now);
                let frame_timeout = self.frame_timeout;
                let limit = since.checked_add(frame_timeout).unwrap_or(since);
                match tokio::time::timeout_at(limit.into(), self.fill()).await {
                    Ok(read) => read?,
                    Err(_elapsed) => {
                        return Err(RpcError::connection_closed(format!(
                            "a frame was not completed within {frame_timeout:?}"
                        )));
                    }
                }
            };
            if read == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(RpcError::connection_closed(
                        "the peer closed the connection in the middle of a frame",
                    ))
                };
            }
        }
    }
}

/// Writes framed batches to an `AsyncWrite`.
#[derive(Debug)]
pub struct FramedWriter<W> {
    io: W,
}

impl<W: AsyncWrite + Send + Unpin + 'static> FramedWriter<W> {
    /// A writer over `io`.
    pub fn new(io: W) -> Self {
        FramedWriter { io }
    }
}

impl<W: AsyncWrite + Send + Unpin + 'static> FrameWrite for FramedWriter<W> {
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }

    async fn write_some(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.io.write(bytes).await?;
        if written == bytes.len() {
            self.io.flush().await?;
        }
        Ok(written)
    }

    async fn write_some_vectored(&mut self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let written = self.io.write_vectored(parts).await?;
        if written == parts.iter().map(|part| part.len()).sum::<usize>() {
            self.io.flush().await?;
        }
        Ok(written)
    }

    fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // A poll with a waker that does nothing: if the stream is not ready, it says so and
        // the writer task, polling with its own waker, takes over.
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(&mut self.io).poll_write(&mut context, bytes) {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// A connection over two stream halves, framed with the given limits.
pub fn framed<R, W>(
    reader: R,
    writer: W,
    peer: Peer,
    max_frame: usize,
    frame_timeout: Duration,
) -> Connection<FramedReader<R>, FramedWriter<W>>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    Connection::new(
        FramedReader::new(reader, max_frame, frame_timeout),
        FramedWriter::new(writer),
        peer,
    )
}

/// A client channel over two stream halves, framed with the channel's limits.
///
/// # Panics
///
/// When called outside a tokio runtime.
pub fn channel<R, W>(reader: R, writer: W, peer: Peer, config: ChannelConfig) -> Channel
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let connection = framed(
        reader,
        writer,
        peer,
        config.max_frame_size,
        config.frame_timeout,
    );
    Channel::new(connection, config)
}

/// A server-side connection over two stream halves, framed with the server's limits and
/// charged to its cap on buffered bytes; pass it to `Server::serve_connection`.
pub fn server_connection<R, W>(
    reader: R,
    writer: W,
    peer: Peer,
    server: &Server,
) -> Connection<FramedReader<R>, FramedWriter<W>>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let config = server.config();
    let reader = FramedReader::new(reader, config.max_frame_size, config.frame_timeout)
        .with_charge(server.buffer_budget().charge());
    Connection::new(reader, FramedWriter::new(writer), peer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures_util::FutureExt;
    use rpc_core::transport::{LENGTH_PREFIX, PREFACE};
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    }

    /// A response split off the read buffer lives until its caller takes it, usually just
    /// after the reader has gone back to reading. The reader waits for the next frame
    /// before making room for it, so the buffer is reclaimed in place, not replaced.
    #[tokio::test]
    async fn a_used_up_buffer_is_reused_once_its_frames_are_dropped_while_the_reader_waits() {
        let (mut peer, ours) = tokio::io::duplex(4096);
        let mut reader = FramedReader::new(ours, 1 << 20, Duration::from_secs(5));
        // The first read takes `MIN_READ` bytes of room; these frames leave less than a
        // small read needs behind them.
        let body = [7_u8; 16];
        let count = (MIN_READ - PREFACE.len() - MIN_READ / 8) / (LENGTH_PREFIX + body.len()) + 1;
        let mut sent = PREFACE.to_vec();
        for _ in 0..count {
            sent.extend(frame(&body));
        }
        peer.write_all(&sent).await.unwrap();
        reader.read_preface().await.unwrap();
        let mut frames = Vec::new();
        for _ in 0..count {
            frames.push(reader.read_frame().await.unwrap().unwrap());
        }
        let buffer_start = frames[0].as_ptr() as usize - PREFACE.len() - LENGTH_PREFIX;
        let room_left = reader.buf.capacity() - reader.buf.len();
        assert!(
            room_left < reader.read_size / 8,
            "{room_left} bytes of room left"
        );

        // The reader goes back to reading while the frames are alive, and they are dropped
        // while it waits.
        assert!(reader.read_frame().now_or_never().is_none());
        drop(frames);
        peer.write_all(&frame(b"next")).await.unwrap();
        let next = reader.read_frame().await.unwrap().unwrap();

        assert_eq!(&next[..], b"next");
        let at = next.as_ptr() as usize;
        assert!(
            (buffer_start..buffer_start + MIN_READ).contains(&at),
            "the next frame was read into a new buffer"
        );
    }
}
