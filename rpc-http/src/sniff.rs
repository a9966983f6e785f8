//! Telling a connection's protocol from its first bytes, within a time limit.

use std::io::{self, Cursor};

use tokio::io::{AsyncRead, AsyncReadExt, Chain};

/// The reading half of a sniffed connection: the bytes read to tell its protocol, then the
/// rest of the stream.
pub type Sniffed<R> = Chain<Cursor<Vec<u8>>, R>;

/// What the first bytes said.
pub(crate) struct FirstBytes<R> {
    /// The connection's reading half, the bytes read put back in front.
    pub(crate) reader: Sniffed<R>,
    /// Whether they were all of `preface`.
    pub(crate) matched: bool,
}

/// Reads until the first bytes tell whether the stream opens with `preface` (never past
/// it: what follows belongs to the protocol it picks). `None` when the stream ends, fails,
/// or takes longer than `limit`.
pub(crate) async fn first_bytes<R: AsyncRead + Unpin>(
    mut reader: R,
    preface: &[u8],
    limit: std::time::Duration,
) -> Option<FirstBytes<R>> {
    let seen = tokio::time::timeout(limit, read_preface(&mut reader, preface))
        .await
        .ok()?
        .ok()??;
    let matched = seen == preface;
    Some(FirstBytes {
        reader: Cursor::new(seen).chain(reader),
        matched,
    })
}

async fn read_preface<R: AsyncRead + Unpin>(
    reader: &mut R,
    preface: &[u8],
) -> io::Result<Option<Vec<u8>>> {
    let mut seen = vec![0_u8; preface.len()];
    let mut len = 0;
    while len < preface.len() {
        let read = reader.read(&mut seen[len..]).await?;
        if read == 0 {
            return Ok(None);
        }
        len += read;
        if seen[..len] != preface[..len] {
            break;
        }
    }
    seen.truncate(len);
    Ok(Some(seen))
}
