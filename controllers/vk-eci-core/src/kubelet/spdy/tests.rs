use super::*;

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn roundtrip(frames: &[Frame]) {
    let mut encoder = FrameEncoder::new();
    let mut decoder = FrameDecoder::default();
    let mut wire = Vec::new();
    for frame in frames {
        encoder.encode(frame, &mut wire).unwrap();
    }
    let mut at = 0;
    for frame in frames {
        let (decoded, used) = decoder.decode(&wire[at..]).unwrap().unwrap();
        assert_eq!(&decoded, frame);
        at += used;
    }
    assert_eq!(at, wire.len());
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_frame_type_survives_a_roundtrip() {
    roundtrip(&[
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 3,
            flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
            headers: headers(&[("streamtype", "error")]),
        },
        Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: Headers::new(),
        },
        Frame::Headers {
            stream_id: 1,
            flags: FLAG_FIN,
            headers: headers(&[("a", "b\0c")]),
        },
        Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: b"hello".to_vec(),
        },
        Frame::Data {
            stream_id: 3,
            flags: 0,
            data: Vec::new(),
        },
        Frame::RstStream {
            stream_id: 5,
            status: rst::CANCEL,
        },
        Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 1,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: 1 << 20,
            }],
        },
        Frame::Ping { id: 7 },
        Frame::GoAway {
            last_good_stream_id: 9,
            status: goaway::OK,
        },
        Frame::WindowUpdate {
            stream_id: 0,
            delta: 4096,
        },
    ]);
}

#[test]
fn header_blocks_share_one_zlib_stream_per_direction() {
    let many: Vec<Frame> = (0..50)
        .map(|i| Frame::SynStream {
            stream_id: 2 * i + 1,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: headers(&[("streamtype", "stdout"), ("n", &i.to_string())]),
        })
        .collect();
    roundtrip(&many);
    // A second decoder that missed the first block cannot read the second: state is shared.
    let mut encoder = FrameEncoder::new();
    let (mut first, mut second) = (Vec::new(), Vec::new());
    encoder.encode(&many[0], &mut first).unwrap();
    encoder.encode(&many[1], &mut second).unwrap();
    assert!(FrameDecoder::default().decode(&second).is_err());
}

#[test]
fn frames_from_another_implementation_decode() {
    // Two SYN_STREAMs as C zlib with the SPDY/3 dictionary writes them (Python's zlib with
    // zdict, sync flush after each block), as client-go opens the error and stdout streams.
    let wire = hex(concat!(
        "80030001000000280000000100000000000078bbe3c6a7c202a62346703a2b294a4dcc851625aca9a0",
        "8006000000ffff",
        "800300010000001900000003000000000000c22a054ccc29f9a52500000000ffff",
    ));
    let mut decoder = FrameDecoder::default();
    let (first, used) = decoder.decode(&wire).unwrap().unwrap();
    assert_eq!(
        first,
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: headers(&[("streamtype", "error")]),
        }
    );
    let (second, _) = decoder.decode(&wire[used..]).unwrap().unwrap();
    let Frame::SynStream { headers, .. } = second else {
        panic!("{second:?}")
    };
    assert_eq!(header(&headers, "StreamType"), Some("stdout"));
}

#[test]
fn control_frames_have_the_specified_layout() {
    let mut wire = Vec::new();
    FrameEncoder::new()
        .encode(&Frame::Ping { id: 1 }, &mut wire)
        .unwrap();
    assert_eq!(wire, hex("800300060000000400000001"));
    wire.clear();
    FrameEncoder::new()
        .encode(
            &Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: b"ok".to_vec(),
            },
            &mut wire,
        )
        .unwrap();
    assert_eq!(
        wire,
        hex("0000000301000002")
            .into_iter()
            .chain(*b"ok")
            .collect::<Vec<_>>()
    );
}

#[test]
fn partial_input_waits_for_more() {
    let mut wire = Vec::new();
    FrameEncoder::new()
        .encode(
            &Frame::GoAway {
                last_good_stream_id: 1,
                status: 0,
            },
            &mut wire,
        )
        .unwrap();
    let mut decoder = FrameDecoder::default();
    for cut in 0..wire.len() {
        assert_eq!(decoder.decode(&wire[..cut]).unwrap(), None, "cut at {cut}");
    }
    assert!(decoder.decode(&wire).unwrap().is_some());
}

#[test]
fn an_oversized_frame_is_refused_from_its_header_alone() {
    let mut decoder = FrameDecoder::new(1024, 1024);
    // A DATA frame announcing 16 MiB - 1: only its 8 header bytes have arrived.
    let error = decoder
        .decode(&hex("00000001 00ffffff".replace(' ', "").as_str()))
        .unwrap_err();
    assert_eq!(
        error,
        SpdyError::FrameTooLarge {
            len: 0xff_ffff,
            max: 1024
        }
    );
    let too_big = Frame::Data {
        stream_id: 1,
        flags: 0,
        data: vec![0; DEFAULT_MAX_FRAME + 1],
    };
    assert!(matches!(
        FrameEncoder::new().encode(&too_big, &mut Vec::new()),
        Err(SpdyError::FrameTooLarge { .. })
    ));
}

#[test]
fn a_header_block_that_inflates_past_the_limit_is_refused() {
    let big = "x".repeat(10_000);
    let mut wire = Vec::new();
    FrameEncoder::new()
        .encode(
            &Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: headers(&[("big", &big)]),
            },
            &mut wire,
        )
        .unwrap();
    assert!(wire.len() < 1024, "compresses well: {}", wire.len());
    let error = FrameDecoder::new(1024, 4096).decode(&wire).unwrap_err();
    assert!(
        matches!(error, SpdyError::HeaderBlock(ref m) if m.contains("4096")),
        "{error}"
    );
    assert!(FrameDecoder::new(1024, 20_000).decode(&wire).is_ok());
}

#[test]
fn malformed_frames_are_clean_errors() {
    let cases: &[(&str, &str)] = &[
        ("PING of 3 bytes", "8003000600000003000000"),
        ("RST_STREAM of 4 bytes", "800300030000000400000001"),
        ("GOAWAY of 4 bytes", "800300070000000400000001"),
        (
            "WINDOW_UPDATE of delta 0",
            "8003000900000008 0000000100000000",
        ),
        (
            "SETTINGS claiming 2 entries with 1",
            "8003000400000008 00000002 01000007",
        ),
        (
            "SETTINGS claiming 2^32-1 entries",
            "8003000400000004 ffffffff",
        ),
        ("SYN_STREAM too short", "8003000100000006 000000010000"),
        ("SYN_REPLY too short", "8003000200000002 0000"),
        ("HEADERS too short", "8003000800000000"),
        ("DATA on stream 0", "0000000000000001 00"),
        ("version 2", "800200060000000400000001"),
        (
            "SYN_REPLY with garbage zlib",
            "8003000200000008 00000001 deadbeef",
        ),
    ];
    for (what, bytes) in cases {
        let wire = hex(&bytes.replace(' ', ""));
        let result = FrameDecoder::default().decode(&wire);
        assert!(result.is_err(), "{what}: {result:?}");
    }
}

#[test]
fn header_blocks_that_lie_are_refused() {
    // 1,000,000 pairs declared in 4 bytes.
    assert!(parse_header_block(&hex("000f4240")).is_err());
    // A name running past the end.
    assert!(parse_header_block(&hex("00000001 000000ff 61".replace(' ', "").as_str())).is_err());
    // Trailing bytes, an empty name, invalid UTF-8.
    assert!(parse_header_block(&hex("00000000 00".replace(' ', "").as_str())).is_err());
    assert!(
        parse_header_block(&hex("00000001 00000000 00000000".replace(' ', "").as_str())).is_err()
    );
    assert!(
        parse_header_block(&hex("00000001 00000001 ff 00000000"
            .replace(' ', "")
            .as_str()))
        .is_err()
    );
    assert_eq!(
        parse_header_block(&header_block(&headers(&[("a", "")])).unwrap()).unwrap(),
        headers(&[("a", "")])
    );
}

#[test]
fn unknown_control_frames_are_skipped_not_fatal() {
    // Type 10 (CREDENTIAL, dropped in 3.1) with a 2-byte body.
    let wire = hex("8003000a000000020000");
    let (frame, used) = FrameDecoder::default().decode(&wire).unwrap().unwrap();
    assert_eq!(frame, Frame::Unknown { kind: 10 });
    assert_eq!(used, wire.len());
}
