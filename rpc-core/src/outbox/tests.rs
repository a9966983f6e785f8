//! The outbox's batching, lanes, high-water mark and direct writes, against a recording
//! write half.

use std::sync::Mutex as StdMutex;

use tokio::sync::Semaphore;

use super::*;

/// One write: whether it was direct, and its bytes.
type Write = (bool, Vec<u8>);

/// A write half that records what was written, each `write_all` waiting for a permit
/// of `gate` (so a test decides when the writer is busy), and `try_write` taking
/// everything at once when `direct` is on.
#[derive(Clone)]
struct Recorder {
    writes: Arc<StdMutex<Vec<Write>>>,
    gate: Arc<Semaphore>,
    direct: bool,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            writes: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
            direct: false,
        }
    }
}

impl Recorder {
    /// Every write so far: `(direct, bytes)`.
    fn writes(&self) -> Vec<Write> {
        recover::lock(&self.writes).clone()
    }
}

impl FrameWrite for Recorder {
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let permit = self.gate.acquire().await.map_err(io::Error::other)?;
        permit.forget();
        recover::lock(&self.writes).push((false, bytes.to_vec()));
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if !self.direct {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        recover::lock(&self.writes).push((true, bytes.to_vec()));
        Ok(bytes.len())
    }
}

/// An outbox with its writer task over `recorder`, once the writer has taken the
/// preface `P` and (for a gated recorder) is waiting to write it.
async fn started(
    recorder: &Recorder,
) -> (Arc<Outbox>, tokio::task::JoinHandle<Result<(), RpcError>>) {
    let outbox = Arc::new(Outbox::new(b"P"));
    let writer = tokio::spawn(run_writer(
        outbox.clone(),
        recorder.clone(),
        Duration::from_secs(10),
    ));
    settle().await;
    (outbox, writer)
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn frame(byte: u8) -> impl FnOnce(&mut BytesMut) -> Result<(), RpcError> {
    move |buf: &mut BytesMut| {
        buf.extend_from_slice(&[byte]);
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn frames_queued_while_the_writer_is_busy_leave_in_one_write() {
    let recorder = Recorder::default();
    let (outbox, _writer) = started(&recorder).await;
    // The writer holds the preface, waiting for the gate; these queue behind it.
    outbox.push(Lane::Shared, frame(b'a')).await.unwrap();
    outbox.push(Lane::Shared, frame(b'b')).await.unwrap();
    assert!(outbox.push_now(|buf| buf.extend_from_slice(b"c")));
    recorder.gate.add_permits(2);
    settle().await;
    assert_eq!(
        recorder.writes(),
        [(false, b"P".to_vec()), (false, b"abc".to_vec())]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn with_calls_in_flight_the_writer_lets_others_queue_before_taking_a_batch() {
    let recorder = Recorder::default();
    recorder.gate.add_permits(10);
    let (outbox, _writer) = started(&recorder).await;
    let (_one, _two) = (InFlight::new(&*outbox), InFlight::new(&*outbox));
    // This wakes the writer; a task scheduled after it queues the next frame.
    outbox.push(Lane::Lone, frame(b'a')).await.unwrap();
    let second = tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.push(Lane::Lone, frame(b'b')).await }
    });
    settle().await;
    second.await.unwrap().unwrap();
    assert_eq!(
        recorder.writes(),
        [(false, b"P".to_vec()), (false, b"ab".to_vec())],
        "frames of calls woken together leave in one write"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn past_the_high_water_mark_frames_wait_for_the_writer() {
    let recorder = Recorder::default();
    let (outbox, _writer) = started(&recorder).await;
    let big = vec![0_u8; HIGH_WATER];
    assert!(outbox.push_now(|buf| buf.extend_from_slice(&big)));
    let mut encode = Some(frame(b'x'));
    assert!(
        outbox.try_push_slot(Lane::Shared, &mut encode).is_none(),
        "a full queue takes no frame"
    );
    assert!(encode.is_some(), "the encoder is left for the retry");
    let waiting = tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.push(Lane::Shared, frame(b'x')).await }
    });
    settle().await;
    assert!(
        !waiting.is_finished(),
        "the frame waits while the queue is full"
    );
    recorder.gate.add_permits(1);
    settle().await;
    assert!(
        waiting.is_finished(),
        "the writer took the batch: room again"
    );
    waiting.await.unwrap().unwrap();
    recorder.gate.add_permits(2);
    settle().await;
    let writes = recorder.writes();
    assert_eq!(
        writes.last().map(|(_, bytes)| bytes.clone()),
        Some(b"x".to_vec())
    );
}

#[tokio::test(flavor = "current_thread")]
async fn stream_items_give_way_to_call_frames_waiting_for_room() {
    let recorder = Recorder::default();
    let (outbox, _writer) = started(&recorder).await;
    assert!(outbox.push_now(|buf| buf.extend_from_slice(b"q")));
    let _waiting_call = WaitingCall::new(&outbox.calls_waiting);
    let mut item = Some(frame(b'i'));
    assert!(
        outbox.try_push_slot(Lane::Bulk, &mut item).is_none(),
        "a stream item waits while a call frame waits for room"
    );
    let mut call = Some(frame(b'c'));
    assert!(outbox.try_push_slot(Lane::Shared, &mut call).is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn a_lone_call_writes_directly_while_the_writer_is_idle() {
    let recorder = Recorder {
        direct: true,
        ..Recorder::default()
    };
    recorder.gate.add_permits(1);
    let (outbox, _writer) = started(&recorder).await;
    let _call = InFlight::new(&*outbox);
    outbox.push(Lane::Lone, frame(b'd')).await.unwrap();
    assert_eq!(
        recorder.writes(),
        [(false, b"P".to_vec()), (true, b"d".to_vec())],
        "written in place, without a hop to the writer task"
    );
    // With other calls in flight, frames go to the writer to leave together.
    let _other = InFlight::new(&*outbox);
    recorder.gate.add_permits(1);
    outbox.push(Lane::Lone, frame(b'e')).await.unwrap();
    settle().await;
    assert_eq!(recorder.writes().last(), Some(&(false, b"e".to_vec())));
}

#[tokio::test(flavor = "current_thread")]
async fn a_finished_outbox_drains_then_refuses_and_a_failed_one_refuses_at_once() {
    let recorder = Recorder::default();
    recorder.gate.add_permits(10);
    let (outbox, writer) = started(&recorder).await;
    assert!(outbox.push_now(|buf| buf.extend_from_slice(b"z")));
    outbox.finish();
    assert!(!outbox.push_now(|buf| buf.extend_from_slice(b"late")));
    assert!(matches!(
        outbox.push(Lane::Shared, frame(b'l')).await,
        Err(RpcError::ConnectionClosed { .. })
    ));
    writer.await.unwrap().unwrap();
    assert_eq!(recorder.writes().concat_bytes(), b"Pz");

    let (outbox, _writer) = started(&recorder).await;
    outbox.fail(RpcError::protocol("broken"));
    assert!(matches!(
        outbox.push(Lane::Shared, frame(b'x')).await,
        Err(RpcError::Protocol { .. })
    ));
}

trait ConcatBytes {
    fn concat_bytes(&self) -> Vec<u8>;
}

impl ConcatBytes for Vec<Write> {
    fn concat_bytes(&self) -> Vec<u8> {
        self.iter().flat_map(|(_, bytes)| bytes.clone()).collect()
    }
}

/// A write half that takes at most `per_write` bytes a call and records, for each vectored
/// write, where each part it was handed lies in memory.
#[derive(Clone)]
struct SegmentRecorder {
    bytes: Arc<StdMutex<Vec<u8>>>,
    /// `(address, length)` of every part handed to a vectored write.
    parts: Arc<StdMutex<Vec<(usize, usize)>>>,
    per_write: usize,
}

impl SegmentRecorder {
    fn new(per_write: usize) -> Self {
        SegmentRecorder {
            bytes: Arc::default(),
            parts: Arc::default(),
            per_write,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        recover::lock(&self.bytes).clone()
    }

    /// Whether `block` itself (not a copy) was handed to a vectored write.
    fn was_handed(&self, block: &bytes::Bytes) -> bool {
        recover::lock(&self.parts).contains(&(block.as_ptr() as usize, block.len()))
    }
}

impl FrameWrite for SegmentRecorder {
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        recover::lock(&self.bytes).extend_from_slice(bytes);
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        Ok(())
    }

    async fn write_some_vectored(&mut self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut room = self.per_write;
        for part in parts {
            recover::lock(&self.parts).push((part.as_ptr() as usize, part.len()));
            let taken = part.len().min(room);
            recover::lock(&self.bytes).extend_from_slice(&part[..taken]);
            room -= taken;
        }
        Ok(self.per_write - room)
    }
}

/// A request frame carrying `block` as a `Bytes` argument, appended to `buf`.
fn block_request(
    buf: &mut BytesMut,
    call_id: u32,
    block: &bytes::Bytes,
    max_frame: usize,
) -> Result<(), RpcError> {
    let head = wire::RequestHead {
        call_id,
        service_id: 1,
        method_id: 2,
        deadline_micros: None,
        request_stream: false,
    };
    wire::encode_request(buf, &head, &[], max_frame, |buf| {
        crate::codec::encode_into(buf, &(crate::codec::SharedBytes(block.clone()), 7_u8))
    })
}

/// Queues a request frame carrying `block`.
async fn queue_block(
    outbox: &Outbox,
    call_id: u32,
    block: &bytes::Bytes,
    max_frame: usize,
) -> Result<(), RpcError> {
    outbox
        .push(Lane::Shared, |buf| {
            block_request(buf, call_id, block, max_frame)
        })
        .await
}

/// What `frames` encode to when every block is copied into the buffer.
fn copied(frames: &[(u32, &bytes::Bytes)]) -> Vec<u8> {
    let mut buf = BytesMut::from(&b"P"[..]);
    for (call_id, block) in frames {
        block_request(&mut buf, *call_id, block, usize::MAX).unwrap();
    }
    buf.to_vec()
}

async fn written_by_writer(recorder: &SegmentRecorder, outbox: Arc<Outbox>) {
    outbox.finish();
    run_writer(outbox, recorder.clone(), Duration::from_secs(10))
        .await
        .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_large_bytes_block_leaves_as_its_own_segment_with_the_same_bytes_on_the_wire() {
    let block = bytes::Bytes::from(vec![0xB1_u8; 1 << 20]);
    let outbox = Arc::new(Outbox::new(b"P"));
    queue_block(&outbox, 1, &block, usize::MAX).await.unwrap();
    // An odd amount per write, so writes end inside the buffer's pieces and the block.
    let recorder = SegmentRecorder::new(4099);
    written_by_writer(&recorder, outbox).await;
    assert!(recorder.was_handed(&block), "the block was copied");
    assert_eq!(recorder.bytes(), copied(&[(1, &block)]));
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_of_more_blocks_than_one_vectored_write_takes_keeps_its_order() {
    // Each frame is two segments (its head, its block); all of them stay below the
    // high-water mark.
    let blocks: Vec<bytes::Bytes> = (0..(MAX_SEGMENTS / 2 + 3) as u8)
        .map(|n| bytes::Bytes::from(vec![n; crate::blocks::MIN_BLOCK + usize::from(n)]))
        .collect();
    let outbox = Arc::new(Outbox::new(b"P"));
    for (call_id, block) in (1..).zip(&blocks) {
        queue_block(&outbox, call_id, block, usize::MAX)
            .await
            .unwrap();
    }
    let recorder = SegmentRecorder::new(usize::MAX);
    written_by_writer(&recorder, outbox).await;
    let frames: Vec<_> = (1..).zip(&blocks).collect();
    assert_eq!(recorder.bytes(), copied(&frames));
    assert!(blocks.iter().all(|block| recorder.was_handed(block)));
}

#[tokio::test(flavor = "current_thread")]
async fn a_frame_refused_as_too_large_takes_its_block_with_it() {
    // Below the high-water mark, so that a block left behind would be written, not waited on.
    let block = bytes::Bytes::from(vec![3_u8; 200 * 1024]);
    let small = bytes::Bytes::from(vec![4_u8; crate::blocks::MIN_BLOCK]);
    let outbox = Arc::new(Outbox::new(b"P"));
    let refused = queue_block(&outbox, 1, &block, 100 * 1024).await;
    assert!(
        matches!(refused, Err(RpcError::FrameTooLarge { .. })),
        "{refused:?}"
    );
    queue_block(&outbox, 3, &small, usize::MAX).await.unwrap();
    let recorder = SegmentRecorder::new(usize::MAX);
    written_by_writer(&recorder, outbox).await;
    assert_eq!(recorder.bytes(), copied(&[(3, &small)]));
}

#[tokio::test(flavor = "current_thread")]
async fn with_compression_a_block_is_compressed_with_its_frame() {
    let block = bytes::Bytes::from(vec![5_u8; 1 << 20]);
    let outbox = Arc::new(Outbox::new(b"P"));
    outbox.compress_frames_of(1024);
    queue_block(&outbox, 1, &block, usize::MAX).await.unwrap();
    let recorder = SegmentRecorder::new(usize::MAX);
    written_by_writer(&recorder, outbox).await;
    let written = recorder.bytes();
    assert!(!recorder.was_handed(&block));
    assert!(
        written.len() < 64 * 1024,
        "{} bytes: not compressed",
        written.len()
    );
    assert_eq!(
        written[1 + wire::LENGTH_PREFIX],
        wire::FrameKind::Compressed as u8
    );
}
