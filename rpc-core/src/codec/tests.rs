//! The codec's limits, borrowing and block encodings, against hand-made payloads.

use super::*;

#[test]
fn values_round_trip_through_a_frame_buffer() {
    let mut buf = BytesMut::new();
    encode_into(&mut buf, &(7_i64, "seven".to_owned())).unwrap();
    let back: (i64, String) = decode(&buf).unwrap();
    assert_eq!(back, (7, "seven".to_owned()));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut buf = BytesMut::new();
    encode_into(&mut buf, &1_u8).unwrap();
    buf.put_u8(0);
    let error = decode::<u8>(&buf).unwrap_err();
    assert!(matches!(error, RpcError::Codec { .. }), "{error}");
}

#[test]
fn byte_buffers_travel_as_one_block() {
    let data = vec![0xAB_u8; 1000];
    let mut buf = BytesMut::new();
    encode_into(&mut buf, &ByteSlice(&data)).unwrap();
    // A varint length (2 bytes for 1000) followed by the bytes themselves.
    assert_eq!(buf.len(), 1002);
    let back: ByteBuf = decode(&buf).unwrap();
    assert_eq!(back.0, data);
    // The block form is also what postcard uses for a plain `Vec<u8>`, so the two agree.
    let plain: Vec<u8> = decode(&buf).unwrap();
    assert_eq!(plain, data);
}

#[test]
fn deep_nesting_is_refused_before_the_stack_runs_out() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Node(Option<Box<Node>>);
    // Some(Some(Some(...))) 10,000 levels deep: one byte per level.
    let mut hostile = vec![1_u8; 10_000];
    hostile.push(0);
    let error = decode::<Node>(&hostile).unwrap_err();
    assert!(error.to_string().contains("nest deeper"), "{error}");
    // 60 levels (a newtype and an option each: 120 deep) are fine.
    let mut fine = vec![1_u8; 60];
    fine.push(0);
    if let Err(error) = decode::<Node>(&fine) {
        panic!("60 levels: {error}");
    }
}

#[test]
fn zero_sized_elements_cannot_spin_the_decoder() {
    // A Vec<()> claiming 2^63 elements, in 9 bytes.
    let hostile = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
    let started = std::time::Instant::now();
    let error = decode::<Vec<()>>(&hostile).unwrap_err();
    assert!(error.to_string().contains("more elements"), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // A fair number of them is fine.
    let mut fine = BytesMut::new();
    encode_into(&mut fine, &vec![(); 1000]).unwrap();
    assert_eq!(decode::<Vec<()>>(&fine).unwrap().len(), 1000);
}

/// 4 KiB in memory (serde implements arrays up to 32 elements).
type Big = [[u64; 32]; 16];

/// The bytes postcard writes for `value`, with no limit applied (what a hostile peer
/// could send).
fn unchecked<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap()
}

#[test]
fn values_much_larger_in_memory_than_on_the_wire_are_refused() {
    // Each `None` is one byte on the wire and over 4096 in memory: 4,000 of them would take
    // 16 MB from 4 KB.
    let hostile = unchecked(&vec![None::<Big>; 4_000]);
    let error = decode::<Vec<Option<Big>>>(&hostile).unwrap_err();
    assert!(error.to_string().contains("32 times its size"), "{error}");
    // Ordinary types are nowhere near the limit.
    let strings = vec![String::new(); 10_000];
    assert_eq!(
        decode::<Vec<String>>(&unchecked(&strings)).unwrap(),
        strings
    );
    let numbers = vec![7_u64; 10_000];
    assert_eq!(decode::<Vec<u64>>(&unchecked(&numbers)).unwrap(), numbers);
}

#[test]
fn what_a_box_holds_is_counted() {
    // A boxed `None` is one byte on the wire, eight in its `Vec` slot and 4104 on the heap.
    let hostile = unchecked(&vec![Box::new(None::<Big>); 4_000]);
    let error = decode::<Vec<Box<Option<Big>>>>(&hostile).unwrap_err();
    assert!(error.to_string().contains("32 times its size"), "{error}");
    // The same one level down, in an option.
    let hostile = unchecked(&vec![Some(Box::new(None::<Big>)); 4_000]);
    let error = decode::<Vec<Option<Box<Option<Big>>>>>(&hostile).unwrap_err();
    assert!(error.to_string().contains("32 times its size"), "{error}");
}

#[test]
fn fields_are_counted_once_with_the_value_that_holds_them() {
    /// 20 optional strings: 480 bytes in memory, 20 on the wire when all are empty.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct Record {
        fields: ([Option<String>; 10], [Option<String>; 10]),
    }
    let records = vec![Record::default(); 5_000];
    let mut buf = BytesMut::new();
    encode_into(&mut buf, &records).unwrap();
    assert_eq!(decode::<Vec<Record>>(&buf).unwrap(), records);
}

#[test]
fn what_the_encoder_writes_the_decoder_accepts() {
    fn check<T>(value: &T) -> bool
    where
        T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
    {
        let mut buf = BytesMut::new();
        match encode_into(&mut buf, value) {
            Ok(()) => {
                let back: T = decode(&buf).unwrap_or_else(|error| {
                    panic!("the encoder wrote what the decoder refuses: {error}")
                });
                assert_eq!(&back, value);
                true
            }
            Err(error) => {
                assert!(
                    error.to_string().contains("the peer would refuse it"),
                    "{error}"
                );
                false
            }
        }
    }
    // Around each limit, every length the encoder takes decodes, and it refuses the rest.
    let units: Vec<bool> = (4_000..4_200).map(|n| check(&vec![(); n])).collect();
    assert!(units.contains(&true) && units.contains(&false));
    let nested: Vec<bool> = (0..200).map(|n| check(&vec![vec![(); 40]; n])).collect();
    assert!(nested.contains(&true) && nested.contains(&false));
    // Too deep for the peer is too deep to send.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Node(Option<Box<Node>>);
    let mut deep = Node(None);
    for _ in 0..200 {
        deep = Node(Some(Box::new(deep)));
    }
    let error = encode_into(&mut BytesMut::new(), &deep).unwrap_err();
    assert!(error.to_string().contains("nest deeper"), "{error}");
}

#[test]
fn a_claimed_length_is_never_passed_on_as_a_capacity_hint() {
    /// Records the size hint its sequence offers.
    struct HintProbe(Option<usize>);

    impl<'de> Deserialize<'de> for HintProbe {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Probe;
            impl<'de> Visitor<'de> for Probe {
                type Value = HintProbe;
                fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                    formatter.write_str("a sequence")
                }
                fn visit_seq<A: de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<HintProbe, A::Error> {
                    let hint = seq.size_hint();
                    while seq.next_element::<u8>()?.is_some() {}
                    Ok(HintProbe(hint))
                }
            }
            deserializer.deserialize_seq(Probe)
        }
    }
    // Three elements, claimed and present: postcard would say `Some(3)`, and serde would
    // reserve that many (for large elements, up to 1 MiB) before reading one.
    let probe = decode::<HintProbe>(&[3, 1, 2, 3]).unwrap();
    assert_eq!(probe.0, None);
    // A map claiming a million entries in a few bytes fails without reserving them.
    let hostile = [0x80, 0x80, 0x40, 1, 1];
    assert!(decode::<std::collections::HashMap<u8, u8>>(&hostile).is_err());
}

#[test]
fn a_claimed_length_beyond_the_input_fails_without_allocating_it() {
    // A varint claiming u32::MAX bytes followed by nothing.
    let hostile = [0xFF, 0xFF, 0xFF, 0xFF, 0x0F];
    assert!(decode::<ByteBuf>(&hostile).is_err());
    assert!(decode::<Vec<u64>>(&hostile).is_err());
}

#[test]
fn a_small_value_is_held_inline_as_encode_into_would_write_it() {
    let value = (42_i64, "hi", Some(true));
    let mut buf = BytesMut::new();
    encode_into(&mut buf, &value).unwrap();
    let small = encode_small(&value).expect("a few bytes are held inline");
    assert_eq!(small.as_slice(), &buf[..]);
}

#[test]
fn a_large_value_or_one_the_peer_would_refuse_is_not_held_inline() {
    assert!(encode_small(&ByteSlice(&[1; SMALL + 1])).is_none());
    assert!(encode_small(&ByteSlice(&[1; SMALL - 1])).is_some());
    // A million unit values take three bytes, and break the element limit: left to
    // `encode_into`, which says so.
    let hostile = vec![(); 1 << 20];
    assert!(encode_small(&hostile).is_none());
    assert!(encode_into(&mut BytesMut::new(), &hostile).is_err());
}
