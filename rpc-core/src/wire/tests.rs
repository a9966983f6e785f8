//! The frame layout and the decoder's limits, byte by byte.

use bytes::{BufMut, Bytes, BytesMut};

use super::*;

fn with_preface(rest: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_slice(&PREFACE);
    buf.put_slice(rest);
    buf
}

#[test]
fn a_request_round_trips_with_deadline_and_metadata() {
    let mut buf = BytesMut::new();
    let head = RequestHead {
        call_id: 7,
        service_id: wire_id("Calculator"),
        method_id: wire_id("add"),
        deadline_micros: Some(1_500),
        request_stream: true,
    };
    let metadata = vec![("trace".to_owned(), "abc".to_owned())];
    let start = start_request(&mut buf, &head, &metadata).unwrap();
    buf.put_slice(b"args");
    finish_frame(&mut buf, start, 1024).unwrap();

    let mut decoder = FrameDecoder::after_preface(1024);
    let body = decoder.decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    let Frame::Request {
        head: decoded,
        metadata: section,
        payload,
    } = Frame::parse(body).unwrap()
    else {
        panic!("not a request");
    };
    assert_eq!(decoded, head);
    assert_eq!(decode_metadata(section, 1024).unwrap(), metadata);
    assert_eq!(&payload[..], b"args");
}

#[test]
fn frames_split_across_reads_are_reassembled() {
    let mut encoded = BytesMut::new();
    encode_cancel(&mut encoded, 9);
    encode_go_away(&mut encoded, 9, "bye");
    let mut decoder = FrameDecoder::after_preface(64);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for byte in encoded.iter() {
        buf.put_u8(*byte);
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            frames.push(Frame::parse(frame).unwrap());
        }
    }
    assert_eq!(
        frames,
        [
            Frame::Cancel { call_id: 9 },
            Frame::GoAway {
                last_call_id: 9,
                reason: "bye".to_owned()
            }
        ]
    );
}

#[test]
fn an_oversized_length_is_refused_from_its_four_bytes() {
    let mut decoder = FrameDecoder::new(1024);
    let mut buf = with_preface(&1025_u32.to_be_bytes());
    let error = decoder.decode(&mut buf).unwrap_err();
    assert!(
        matches!(
            error,
            RpcError::FrameTooLarge {
                len: 1025,
                max: 1024
            }
        ),
        "{error}"
    );
}

#[test]
fn http_and_tls_are_refused_at_the_first_byte() {
    for first_bytes in [&b"G"[..], &[0x16, 0x03, 0x01][..], &b"\x00RPX"[..]] {
        let mut decoder = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(first_bytes);
        let error = decoder.decode(&mut buf).unwrap_err();
        assert!(matches!(error, RpcError::Protocol { .. }), "{error}");
    }
}

#[test]
fn a_partial_preface_waits_for_more_bytes() {
    let mut decoder = FrameDecoder::new(1024);
    let mut buf = BytesMut::from(&PREFACE[..3]);
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    assert!(!decoder.preface_seen());
    assert_eq!(decoder.bytes_missing(&buf), PREFACE.len() - 3);
}

#[test]
fn another_protocol_version_is_named_in_the_error() {
    let mut preface = PREFACE;
    preface[6] = 9;
    let mut decoder = FrameDecoder::new(1024);
    let mut buf = BytesMut::from(&preface[..]);
    let error = decoder.decode(&mut buf).unwrap_err();
    assert!(error.to_string().contains("version 9"), "{error}");
}

#[test]
fn an_empty_frame_is_a_protocol_error() {
    let mut decoder = FrameDecoder::after_preface(1024);
    let mut buf = BytesMut::from(&0_u32.to_be_bytes()[..]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Err(RpcError::Protocol { .. })
    ));
}

#[test]
fn truncated_headers_and_unknown_kinds_are_protocol_errors() {
    for body in [
        &[0x01_u8, 0x00, 0x00][..],
        &[0x7F][..],
        &[0x02, 0xEE, 0, 0, 0, 1][..],
    ] {
        let error = Frame::parse(Bytes::copy_from_slice(body)).unwrap_err();
        assert!(matches!(error, RpcError::Protocol { .. }), "{error}");
    }
}

#[test]
fn an_oversized_outgoing_frame_is_removed_again() {
    let mut buf = BytesMut::from(&b"queued"[..]);
    let start = start_frame(&mut buf, FrameKind::Response);
    buf.put_slice(&[0; 100]);
    let error = finish_frame(&mut buf, start, 50).unwrap_err();
    assert!(matches!(
        error,
        RpcError::FrameTooLarge { len: 101, max: 50 }
    ));
    assert_eq!(&buf[..], b"queued");
}

#[test]
fn metadata_over_the_limit_is_refused() {
    let mut buf = BytesMut::new();
    let head = RequestHead {
        call_id: 1,
        service_id: 1,
        method_id: 1,
        deadline_micros: None,
        request_stream: false,
    };
    let metadata = vec![("k".to_owned(), "v".repeat(100))];
    let start = start_request(&mut buf, &head, &metadata).unwrap();
    finish_frame(&mut buf, start, 1024).unwrap();
    let mut decoder = FrameDecoder::after_preface(1024);
    let Frame::Request { metadata, .. } =
        Frame::parse(decoder.decode(&mut buf).unwrap().unwrap()).unwrap()
    else {
        panic!("not a request");
    };
    assert!(matches!(
        decode_metadata(metadata, 64),
        Err(RpcError::ResourceExhausted { .. })
    ));
}

#[test]
fn wire_ids_are_fnv1a() {
    // Reference values of 32-bit FNV-1a.
    assert_eq!(wire_id(""), 0x811c_9dc5);
    assert_eq!(wire_id("a"), 0xe40c_292c);
    assert_eq!(wire_id("foobar"), 0xbf9c_f968);
}

#[test]
fn stream_and_keepalive_frames_round_trip() {
    let mut buf = BytesMut::new();
    encode_ping(&mut buf, 7, false);
    encode_ping(&mut buf, 7, true);
    encode_window(&mut buf, 3, 64, 1 << 20);
    encode_stop_stream(&mut buf, 3);
    encode_stream_piece(&mut buf, 3, &Bytes::from_static(b"part"), false);
    encode_stream_piece(&mut buf, 3, &Bytes::from_static(b"last"), true);
    encode_stream_end(&mut buf, 3, Status::HandlerPanicked, "");
    let mut decoder = FrameDecoder::after_preface(1024);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf).unwrap() {
        frames.push(Frame::parse(frame).unwrap());
    }
    assert_eq!(
        frames,
        [
            Frame::Ping { opaque: 7 },
            Frame::Pong { opaque: 7 },
            Frame::Window {
                call_id: 3,
                credit: 64,
                bytes: 1 << 20
            },
            Frame::StopStream { call_id: 3 },
            Frame::StreamPart {
                call_id: 3,
                payload: Bytes::from_static(b"part")
            },
            Frame::StreamItem {
                call_id: 3,
                payload: Bytes::from_static(b"last")
            },
            Frame::StreamEnd {
                call_id: 3,
                status: Status::HandlerPanicked,
                text: Bytes::new()
            },
        ]
    );
}

mod properties {
    //! Properties over generated inputs: frames survive any split of the byte stream, and
    //! values survive the codec.

    use proptest::prelude::*;

    use super::*;
    use crate::codec;

    /// A value with a bit of everything postcard encodes differently.
    type Sample = (i64, String, Vec<u8>, Option<u32>, Vec<(u8, bool)>);

    fn arbitrary_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                proptest::option::of(1_u64..u64::MAX),
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(
                    |(call_id, service_id, method_id, deadline_micros, request_stream, payload)| {
                        Frame::Request {
                            head: RequestHead {
                                call_id,
                                service_id,
                                method_id,
                                deadline_micros,
                                request_stream,
                            },
                            metadata: Bytes::new(),
                            payload: Bytes::from(payload),
                        }
                    }
                ),
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(
                |(call_id, payload)| Frame::Response {
                    call_id,
                    status: Status::Ok,
                    payload: Bytes::from(payload)
                }
            ),
            any::<u32>().prop_map(|call_id| Frame::Cancel { call_id }),
            (any::<u32>(), any::<u32>()).prop_map(|(call_id, credit)| Frame::Window {
                call_id,
                credit,
                bytes: credit.wrapping_mul(7),
            }),
            any::<u64>().prop_map(|opaque| Frame::Ping { opaque }),
        ]
    }

    fn encode(frame: &Frame, buf: &mut BytesMut) {
        match frame {
            Frame::Request { head, payload, .. } => {
                let start = start_request(buf, head, &[]).unwrap();
                buf.put_slice(payload);
                finish_frame(buf, start, usize::MAX).unwrap();
            }
            Frame::Response {
                call_id,
                status,
                payload,
            } => {
                encode_response(buf, *call_id, *status, payload, usize::MAX).unwrap();
            }
            Frame::Cancel { call_id } => encode_cancel(buf, *call_id),
            Frame::Window {
                call_id,
                credit,
                bytes,
            } => encode_window(buf, *call_id, *credit, *bytes),
            Frame::Ping { opaque } => encode_ping(buf, *opaque, false),
            other => unreachable!("not generated: {other:?}"),
        }
    }

    proptest! {
        #[test]
        fn frames_survive_any_split_of_the_stream(
            frames in proptest::collection::vec(arbitrary_frame(), 1..20),
            cuts in proptest::collection::vec(1_usize..64, 1..200),
        ) {
            let mut stream = BytesMut::from(&PREFACE[..]);
            for frame in &frames {
                encode(frame, &mut stream);
            }
            let mut decoder = FrameDecoder::new(1 << 20);
            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            let mut cuts = cuts.into_iter().cycle();
            while !stream.is_empty() {
                let take = cuts.next().unwrap_or(1).min(stream.len());
                buf.extend_from_slice(&stream.split_to(take));
                while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                    decoded.push(Frame::parse(frame).unwrap());
                }
            }
            prop_assert_eq!(decoded, frames);
        }

        #[test]
        fn values_survive_the_codec(
            value in (any::<i64>(), ".{0,40}", proptest::collection::vec(any::<u8>(), 0..500), proptest::option::of(any::<u32>()), proptest::collection::vec((any::<u8>(), any::<bool>()), 0..20)),
        ) {
            let mut buf = BytesMut::new();
            codec::encode_into(&mut buf, &value).unwrap();
            prop_assert_eq!(codec::encoded_len(&value).unwrap(), buf.len());
            let back: Sample = codec::decode(&buf).unwrap();
            prop_assert_eq!(back, value);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut decoder = FrameDecoder::new(1 << 16);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decoder.decode(&mut buf) {
                let _ = Frame::parse(frame);
            }
            let _ = Frame::parse(Bytes::from(bytes.clone()));
            let _ = codec::decode::<(i64, String, Vec<u8>, Option<u32>)>(&bytes);
        }
    }
}
