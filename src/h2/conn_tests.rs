use super::*;
use crate::h2::frame::{flag, kind};
use crate::h2::test_client::*;

#[test]
fn server_settings_first_then_ack() {
    let mut conn = Connection::new(ServerSettings::default());
    let out = frames(conn.output());
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].kind, out[0].flags, out[0].stream), (kind::SETTINGS, 0, 0));
    assert_eq!(
        out[0].payload,
        [0, 3, 0, 0, 0, 128, 0, 4, 0, 0, 0xff, 0xff, 0, 6, 0, 1, 0, 0].to_vec()
    );
    assert!(!conn.started());
    let events = feed(&mut conn, &preface());
    assert!(events.is_empty());
    assert!(conn.started());
    let out = frames(conn.output());
    assert_eq!(
        out,
        vec![Out {
            kind: kind::SETTINGS,
            flags: flag::ACK,
            stream: 0,
            payload: vec![]
        }]
    );
}

#[test]
fn get_answered_with_headers_and_data() {
    let (mut conn, mut client) = started();
    let events = feed(&mut conn, &client.headers(1, &get("/events?x=1"), true));
    let (stream, head, end_stream) = request_stream(&events);
    assert_eq!((stream, end_stream), (1, true));
    assert_eq!(head.method, http::Method::GET);
    assert_eq!(head.uri, "https://example.com/events?x=1");
    assert_eq!(head.version, http::Version::HTTP_2);
    assert_eq!(conn.open_streams(), 1);

    let mut headers = HeaderMap::new();
    headers.insert("content-type", "text/event-stream".parse().unwrap());
    conn.send_headers(1, StatusCode::OK, &headers, false);
    assert_eq!(conn.send_capacity(1), 65_535);
    assert_eq!(conn.send_data(1, b"data: hi\n\n", false), 10);
    assert_eq!(conn.send_data(1, b"", true), 0);
    assert_eq!(conn.open_streams(), 0);
    let out = frames(conn.output());
    assert_eq!(out.len(), 3);
    assert_eq!(
        (out[0].kind, out[0].flags, out[0].stream),
        (kind::HEADERS, flag::END_HEADERS, 1)
    );
    assert_eq!(
        decode_block(&out[0].payload),
        vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "text/event-stream".into())
        ]
    );
    assert_eq!(
        out[1],
        Out {
            kind: kind::DATA,
            flags: 0,
            stream: 1,
            payload: b"data: hi\n\n".to_vec()
        }
    );
    assert_eq!(
        out[2],
        Out {
            kind: kind::DATA,
            flags: flag::END_STREAM,
            stream: 1,
            payload: vec![]
        }
    );
    assert_eq!(conn.send_capacity(1), 0, "a closed stream has no capacity");
}

#[test]
fn ping_answered_and_own_ping_acked() {
    let (mut conn, _) = started();
    let events = feed(&mut conn, &ping(false, *b"h2spec\0\0"));
    assert!(events.is_empty());
    assert_eq!(
        frames(conn.output()),
        vec![Out {
            kind: kind::PING,
            flags: flag::ACK,
            stream: 0,
            payload: b"h2spec\0\0".to_vec()
        }]
    );

    assert!(conn.ping());
    assert!(!conn.ping(), "one outstanding at a time");
    let out = frames(conn.output());
    assert_eq!((out[0].kind, out[0].flags), (kind::PING, 0));
    // Another ACK is not ours; the right payload is.
    assert!(feed(&mut conn, &ping(true, *b"whatever")).is_empty());
    let events = feed(&mut conn, &ping(true, out[0].payload.clone().try_into().unwrap()));
    assert!(matches!(events.as_slice(), [Event::PingAcked]));
    assert!(frames(conn.output()).is_empty(), "an ACK is not answered");
    assert!(conn.ping());
}

#[test]
fn go_away_names_the_last_stream_and_ignores_later_ones() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &get("/"), true));
    conn.go_away();
    let out = frames(conn.output());
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].kind, out[0].u32_at(0), out[0].code()), (kind::GOAWAY, 1, 0));
    // A later stream is ignored, but its block still decoded: the one
    // after it, sharing the encoder's table, still... is ignored too.
    let events = feed(&mut conn, &client.headers(3, &get("/a"), false));
    assert!(events.is_empty());
    assert!(feed(&mut conn, &data(3, b"x", true)).is_empty());
    assert!(frames(conn.output()).is_empty());
    // Stream 1 still runs to its end.
    conn.send_headers(1, StatusCode::NO_CONTENT, &HeaderMap::new(), true);
    let out = frames(conn.output());
    assert_eq!(
        (out[0].kind, out[0].flags),
        (kind::HEADERS, flag::END_HEADERS | flag::END_STREAM)
    );
    assert_eq!(out[0].payload, vec![0x89]);
    assert_eq!(conn.open_streams(), 0);
}

#[test]
fn client_goaway_is_an_event() {
    let (mut conn, _) = started();
    let events = feed(&mut conn, &goaway(0, 0));
    assert!(matches!(events.as_slice(), [Event::GoAway]));
}

/// The end-to-end path, fed at every byte boundary: same events, same
/// output.
#[test]
fn every_split_of_a_session_gives_the_same_result() {
    let mut client = Client::new();
    let mut input = preface();
    input.extend(settings_ack());
    input.extend(ping(false, *b"12345678"));
    input.extend(client.headers(1, &request("POST", "/up"), false));
    input.extend(data(1, b"hello", false));
    input.extend(data(1, b" world", true));
    input.extend(client.headers(3, &get("/"), true));
    let run = |cuts: &[usize]| {
        let mut conn = Connection::new(ServerSettings::default());
        let events = feed_split(&mut conn, &input, cuts).unwrap();
        let summary: Vec<String> = events
            .iter()
            .map(|e| match e {
                Event::Request {
                    stream,
                    head,
                    end_stream,
                } => format!("req {stream} {} {end_stream}", head.uri),
                Event::Data {
                    stream,
                    data,
                    end_stream,
                } => format!("data {stream} {data:?} {end_stream}"),
                other => format!("{other:?}"),
            })
            .collect();
        (summary, conn.output().clone())
    };
    let whole = run(&[]);
    assert_eq!(
        whole.0,
        vec![
            "req 1 https://example.com/up false",
            "data 1 b\"hello\" false",
            "data 1 b\" world\" true",
            "req 3 https://example.com/ true"
        ]
    );
    for cut in 0..=input.len() {
        assert_eq!(run(&[cut]), whole, "cut at {cut}");
    }
    let bytewise: Vec<usize> = (0..input.len()).collect();
    assert_eq!(run(&bytewise), whole);
}

#[test]
fn window_update_unblocks_a_stream() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &settings(&[(frame::setting::INITIAL_WINDOW_SIZE, 3)]));
    frames(conn.output());
    feed(&mut conn, &client.headers(1, &get("/"), true));
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), false);
    assert_eq!(conn.send_data(1, b"hello", true), 3);
    assert_eq!(conn.send_capacity(1), 0);
    let events = feed(&mut conn, &window_update(1, 10));
    assert!(matches!(events.as_slice(), [Event::WindowOpened { stream: 1 }]));
    assert_eq!(conn.send_data(1, b"lo", true), 2);
    let out = frames(conn.output());
    let data: Vec<_> = out
        .iter()
        .filter(|f| f.kind == kind::DATA)
        .map(|f| (f.payload.clone(), f.flags))
        .collect();
    assert_eq!(data, vec![(b"hel".to_vec(), 0), (b"lo".to_vec(), flag::END_STREAM)]);
}

#[test]
fn client_reset_is_an_event_and_priority_is_ignored() {
    let (mut conn, mut client) = started();
    assert!(feed(&mut conn, &priority(3, 0, 16)).is_empty());
    feed(&mut conn, &client.headers(1, &request("POST", "/"), false));
    let events = feed(&mut conn, &rst_stream(1, 8));
    assert!(matches!(
        events.as_slice(),
        [Event::Reset {
            stream: 1,
            code: ErrorCode::Cancel
        }]
    ));
    assert_eq!(conn.open_streams(), 0);
    assert!(frames(conn.output()).is_empty());
}

// ---- h2spec 3.5, 4.x: preface, frame format and size -------------------

#[test]
fn invalid_preface_is_a_protocol_error() {
    let mut conn = Connection::new(ServerSettings::default());
    frames(conn.output());
    let mut events = Vec::new();
    assert_eq!(
        conn.receive(b"PRI * HTTP/2", &mut events),
        Ok(0),
        "a prefix waits for more"
    );
    assert_eq!(
        conn_error(&mut conn, b"INVALID CONNECTION PREFACE\r\n\r\n"),
        ErrorCode::ProtocolError
    );
    let mut conn = Connection::new(ServerSettings::default());
    assert_eq!(conn_error(&mut conn, b"GET / HTTP/1.1\r\n"), ErrorCode::ProtocolError);
}

#[test]
fn first_frame_must_be_settings() {
    let mut conn = Connection::new(ServerSettings::default());
    let mut input = PREFACE_ONLY.to_vec();
    input.extend(ping(false, [0; 8]));
    assert_eq!(conn_error(&mut conn, &input), ErrorCode::ProtocolError);
    let mut conn = Connection::new(ServerSettings::default());
    let mut input = PREFACE_ONLY.to_vec();
    input.extend(settings_ack());
    assert_eq!(conn_error(&mut conn, &input), ErrorCode::ProtocolError);
}

const PREFACE_ONLY: &[u8] = crate::h2::frame::PREFACE;

#[test]
fn unknown_types_flags_and_reserved_bit_are_ignored() {
    let (mut conn, _) = started();
    let mut input = frame(0x16, 0, 0, &[0; 8]);
    input.extend(frame(0xff, 0xff, 5, b"anything"));
    input.extend(b"\x00\x00\x08\x06\x16\x80\x00\x00\x00\0\0\0\0\0\0\0\0");
    assert!(feed(&mut conn, &input).is_empty());
    let out = frames(conn.output());
    assert_eq!(out.len(), 1, "only the PING answered");
    assert_eq!((out[0].kind, out[0].flags), (kind::PING, flag::ACK));
}

#[test]
fn a_max_size_data_frame_is_accepted() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &request("POST", "/"), false));
    let body = vec![b'x'; 16_384];
    let events = feed(&mut conn, &data(1, &body, true));
    assert!(matches!(&events[..], [Event::Data { stream: 1, data, end_stream: true }] if data.len() == 16_384));
}

#[test]
fn a_frame_over_the_max_size_is_refused_from_its_header() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &request("POST", "/"), false));
    let header = &data(1, &vec![0; 16_385], true)[..9];
    assert_eq!(conn_error(&mut conn, header), ErrorCode::FrameSizeError);
    // HEADERS too (h2spec 4.2: a connection error).
    let (mut conn, _) = started();
    assert_eq!(
        conn_error(&mut conn, &frame(kind::HEADERS, 5, 1, &vec![0; 16_385])),
        ErrorCode::FrameSizeError
    );
}

#[test]
fn header_block_errors() {
    // 4.3: an invalid block is a COMPRESSION_ERROR.
    let (mut conn, _) = started();
    assert_eq!(
        conn_error(&mut conn, b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x40"),
        ErrorCode::CompressionError
    );
    // A PRIORITY, a HEADERS on another stream, an unknown frame inside a
    // block are PROTOCOL_ERRORs.
    for intruder in [
        priority(1, 0, 255),
        frame(kind::HEADERS, 5, 3, b"\x82"),
        frame(0x16, 0, 0, &[0; 8]),
    ] {
        let (mut conn, mut client) = started();
        let block = client.block(&get("/"));
        let mut input = frame(kind::HEADERS, 0, 1, &block);
        input.extend(intruder);
        assert_eq!(conn_error(&mut conn, &input), ErrorCode::ProtocolError);
    }
}

// ---- h2spec 5.1: stream states -------------------------------------------

#[test]
fn frames_on_idle_streams() {
    for input in [
        data(1, b"test", true),
        rst_stream(1, 8),
        window_update(1, 100),
        frame(kind::CONTINUATION, 4, 1, b"\x82"),
    ] {
        let (mut conn, _) = started();
        assert_eq!(conn_error(&mut conn, &input), ErrorCode::ProtocolError, "{input:?}");
    }
    // PRIORITY is fine on an idle stream, and the stream can open after.
    let (mut conn, mut client) = started();
    feed(&mut conn, &priority(3, 0, 1));
    let events = feed(&mut conn, &client.headers(1, &get("/"), true));
    assert_eq!(request_stream(&events).0, 1);
    // DATA on an even (never opened) stream.
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(3, &get("/"), true));
    assert_eq!(conn_error(&mut conn, &data(2, b"x", true)), ErrorCode::ProtocolError);
}

#[test]
fn frames_on_half_closed_remote_streams() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &get("/"), true));
    let (events, rsts) = feed_rsts(&mut conn, &data(1, b"test", true));
    assert!(matches!(
        events[..],
        [Event::Reset {
            stream: 1,
            code: ErrorCode::StreamClosed
        }]
    ));
    assert_eq!(rsts, vec![(1, ErrorCode::StreamClosed)]);

    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &get("/"), true));
    let (events, rsts) = feed_rsts(&mut conn, &client.headers(1, &get("/"), true));
    assert!(matches!(
        events[..],
        [Event::Reset {
            stream: 1,
            code: ErrorCode::StreamClosed
        }]
    ));
    assert_eq!(rsts, vec![(1, ErrorCode::StreamClosed)]);

    let (mut conn, mut client) = started();
    let block = client.block(&get("/"));
    feed(
        &mut conn,
        &frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, &block),
    );
    assert_eq!(
        conn_error(&mut conn, &frame(kind::CONTINUATION, 4, 1, &block)),
        ErrorCode::ProtocolError
    );

    // WINDOW_UPDATE, PRIORITY and RST_STREAM are fine.
    let (mut conn, mut client) = started();
    feed(&mut conn, &settings(&[(4, 0)]));
    feed(&mut conn, &client.headers(1, &get("/"), true));
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), false);
    assert_eq!(conn.send_data(1, b"x", true), 0);
    frames(conn.output());
    let mut input = priority(1, 0, 1);
    input.extend(window_update(1, 1));
    let events = feed(&mut conn, &input);
    assert!(matches!(events[..], [Event::WindowOpened { stream: 1 }]));
    assert_eq!(conn.send_data(1, b"x", true), 1);
    let events = feed(&mut conn, &rst_stream(1, 8));
    assert!(events.is_empty(), "the stream had ended");
}

#[test]
fn frames_on_streams_the_client_reset() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &request("POST", "/"), false));
    feed(&mut conn, &rst_stream(1, 8));
    let (events, rsts) = feed_rsts(&mut conn, &data(1, b"test", true));
    assert!(events.is_empty());
    assert_eq!(rsts, vec![(1, ErrorCode::StreamClosed)]);
    // A HEADERS on it is a connection error STREAM_CLOSED.
    assert_eq!(
        conn_error(&mut conn, &client.headers(1, &get("/"), true)),
        ErrorCode::StreamClosed
    );
}

#[test]
fn frames_on_streams_closed_by_end_stream() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &get("/"), true));
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), true);
    frames(conn.output());
    let (_, rsts) = feed_rsts(&mut conn, &data(1, b"test", true));
    assert_eq!(rsts, vec![(1, ErrorCode::StreamClosed)]);
    assert_eq!(
        conn_error(&mut conn, &client.headers(1, &get("/"), true)),
        ErrorCode::StreamClosed
    );

    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &get("/"), true));
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), true);
    let block = client.block(&get("/"));
    assert_eq!(
        conn_error(&mut conn, &frame(kind::CONTINUATION, 4, 1, &block)),
        ErrorCode::ProtocolError
    );
    // PRIORITY is fine on a closed stream.
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &get("/"), true));
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), true);
    frames(conn.output());
    assert!(feed_rsts(&mut conn, &priority(1, 0, 7)).1.is_empty());
}

#[test]
fn stream_identifiers() {
    // 5.1.1: even, and decreasing, ids are PROTOCOL_ERRORs.
    let (mut conn, mut client) = started();
    assert_eq!(
        conn_error(&mut conn, &client.headers(2, &get("/"), true)),
        ErrorCode::ProtocolError
    );
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(5, &get("/"), true));
    assert_eq!(
        conn_error(&mut conn, &client.headers(3, &get("/"), true)),
        ErrorCode::ProtocolError
    );
}

#[test]
fn concurrency_limit_refuses_streams() {
    let (mut conn, mut client) = started_with(ServerSettings {
        max_concurrent_streams: 2,
        ..ServerSettings::default()
    });
    let mut input = Vec::new();
    for id in [1, 3, 5] {
        input.extend(client.headers(id, &get("/"), true));
    }
    let (events, rsts) = feed_rsts(&mut conn, &input);
    assert_eq!(events.len(), 2);
    assert_eq!(rsts, vec![(5, ErrorCode::RefusedStream)]);
    assert_eq!(conn.open_streams(), 2);
    // The refused block was decoded: the next one (sharing the client's
    // table) still is a valid request once a stream ended.
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), true);
    let events = feed(&mut conn, &client.headers(7, &get("/"), true));
    assert_eq!(request_stream(&events).0, 7);
}

#[test]
fn self_dependency() {
    // 5.3.1: HEADERS depending on itself: a stream error.
    let (mut conn, mut client) = started();
    let block = client.block(&get("/"));
    let mut payload = vec![0, 0, 0, 1, 255];
    payload.extend(&block);
    let (events, rsts) = feed_rsts(&mut conn, &frame(kind::HEADERS, 0x25, 1, &payload));
    assert!(events.is_empty());
    assert_eq!(rsts, vec![(1, ErrorCode::ProtocolError)]);
    // PRIORITY depending on itself: on an open stream a stream error, on
    // an idle one a connection error (no RST_STREAM for an idle stream).
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &request("POST", "/"), false));
    let (events, rsts) = feed_rsts(&mut conn, &priority(1, 1, 255));
    assert!(matches!(
        events[..],
        [Event::Reset {
            stream: 1,
            code: ErrorCode::ProtocolError
        }]
    ));
    assert_eq!(rsts, vec![(1, ErrorCode::ProtocolError)]);
    let (mut conn, _) = started();
    assert_eq!(conn_error(&mut conn, &priority(1, 1, 255)), ErrorCode::ProtocolError);
}

#[test]
fn connection_error_sends_goaway_with_last_stream() {
    // 5.4.1: PING on stream 3.
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &get("/"), true));
    let mut events = Vec::new();
    assert!(conn.receive(&frame(kind::PING, 0, 3, &[0; 8]), &mut events).is_err());
    let out = frames(conn.output());
    assert_eq!((out[0].kind, out[0].u32_at(0), out[0].code()), (kind::GOAWAY, 1, 1));
    assert_eq!(conn.open_streams(), 0);
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), true);
    assert!(conn.output().is_empty(), "nothing after the GOAWAY");
}

// ---- h2spec 6.x: frame definitions ----------------------------------------

#[test]
fn data_frames() {
    let (mut conn, _) = started();
    assert_eq!(conn_error(&mut conn, &data(0, b"test", true)), ErrorCode::ProtocolError);
    // Pad length 6 in a 5-byte payload.
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &request("POST", "/"), false));
    assert_eq!(
        conn_error(&mut conn, b"\x00\x00\x05\x00\x09\x00\x00\x00\x01\x06Test"),
        ErrorCode::ProtocolError
    );
    // Padding is removed, and given back at once.
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &request("POST", "/"), false));
    let events = feed(&mut conn, &frame(kind::DATA, flag::PADDED, 1, b"\x05test\0\0\0\0\0"));
    assert!(matches!(&events[..], [Event::Data { stream: 1, data, end_stream: false }] if data == "test"));
    assert_eq!(conn.streams[0].recv_released, 6);
}

#[test]
fn headers_frames() {
    let (mut conn, mut client) = started();
    assert_eq!(
        conn_error(&mut conn, &client.headers(0, &get("/"), true)),
        ErrorCode::ProtocolError
    );
    // Pad length past the fragment (h2spec 6.2).
    let (mut conn, mut client) = started();
    let block = client.block(&get("/"));
    let mut payload = vec![block.len() as u8 + 2];
    payload.extend(&block);
    assert_eq!(
        conn_error(&mut conn, &frame(kind::HEADERS, 0x0d, 1, &payload)),
        ErrorCode::ProtocolError
    );
    // Padding and priority are accepted.
    let (mut conn, mut client) = started();
    let block = client.block(&get("/"));
    let mut payload = vec![3, 0, 0, 0, 0, 16];
    payload.extend(&block);
    payload.extend([0, 0, 0]);
    let events = feed(&mut conn, &frame(kind::HEADERS, 0x2d, 1, &payload));
    assert_eq!(request_stream(&events).0, 1);
}

#[test]
fn priority_frames() {
    let (mut conn, _) = started();
    assert_eq!(conn_error(&mut conn, &priority(0, 0, 255)), ErrorCode::ProtocolError);
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &get("/"), true));
    let (_, rsts) = feed_rsts(&mut conn, b"\x00\x00\x04\x02\x00\x00\x00\x00\x01\x80\x00\x00\x01");
    assert_eq!(rsts, vec![(1, ErrorCode::FrameSizeError)]);
    // Closed by then: still a stream error.
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &get("/"), true));
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), true);
    frames(conn.output());
    let (_, rsts) = feed_rsts(&mut conn, b"\x00\x00\x04\x02\x00\x00\x00\x00\x01\x80\x00\x00\x01");
    assert_eq!(rsts, vec![(1, ErrorCode::FrameSizeError)]);
}

#[test]
fn rst_stream_frames() {
    let (mut conn, _) = started();
    assert_eq!(conn_error(&mut conn, &rst_stream(0, 8)), ErrorCode::ProtocolError);
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &get("/"), true));
    assert_eq!(
        conn_error(&mut conn, b"\x00\x00\x03\x03\x00\x00\x00\x00\x01\x00\x00\x00"),
        ErrorCode::FrameSizeError
    );
    // 7: an unknown code is no special case.
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &request("POST", "/"), false));
    let events = feed(&mut conn, &rst_stream(1, 0xff));
    assert!(matches!(
        events[..],
        [Event::Reset {
            stream: 1,
            code: ErrorCode::Other(0xff)
        }]
    ));
}

#[test]
fn settings_frames() {
    for (input, code) in [
        (
            b"\x00\x00\x01\x04\x01\x00\x00\x00\x00\x00".to_vec(),
            ErrorCode::FrameSizeError,
        ),
        (
            b"\x00\x00\x06\x04\x00\x00\x00\x00\x01\x00\x03\x00\x00\x00\x64".to_vec(),
            ErrorCode::ProtocolError,
        ),
        (
            b"\x00\x00\x03\x04\x00\x00\x00\x00\x00\x00\x03\x00".to_vec(),
            ErrorCode::FrameSizeError,
        ),
        (settings(&[(2, 2)]), ErrorCode::ProtocolError),
        (settings(&[(4, 1 << 31)]), ErrorCode::FlowControlError),
        (settings(&[(5, 16_383)]), ErrorCode::ProtocolError),
        (settings(&[(5, 1 << 24)]), ErrorCode::ProtocolError),
        (settings(&[(8, 2)]), ErrorCode::ProtocolError),
    ] {
        let (mut conn, _) = started();
        assert_eq!(conn_error(&mut conn, &input), code, "{input:?}");
    }
    // Unknown ids are ignored; every SETTINGS is acknowledged.
    let (mut conn, _) = started();
    feed(&mut conn, &settings(&[(0xff, 1), (2, 0), (1, 0), (3, 10), (6, 100)]));
    let out = frames(conn.output());
    assert_eq!(
        out,
        vec![Out {
            kind: kind::SETTINGS,
            flags: flag::ACK,
            stream: 0,
            payload: vec![]
        }]
    );
}

#[test]
fn settings_values_apply_in_order() {
    // 6.5.3: 100 then 1: the window is 1.
    let (mut conn, mut client) = started();
    feed(&mut conn, &settings(&[(4, 100), (4, 1)]));
    feed(&mut conn, &client.headers(1, &get("/"), true));
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), false);
    assert_eq!(conn.send_data(1, b"hello", true), 1);
}

#[test]
fn initial_window_changes_apply_to_open_streams() {
    // 6.9.2: 0, a stream, then 1: one byte may go.
    let (mut conn, mut client) = started();
    feed(&mut conn, &settings(&[(4, 0)]));
    feed(&mut conn, &client.headers(1, &get("/"), true));
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), false);
    assert_eq!(conn.send_capacity(1), 0);
    let events = feed(&mut conn, &settings(&[(4, 1)]));
    assert!(matches!(events[..], [Event::WindowOpened { stream: 1 }]));
    assert_eq!(conn.send_data(1, b"hello", true), 1);
    // 3, all sent, then 2: -1; a WINDOW_UPDATE of 2 leaves 1.
    let (mut conn, mut client) = started();
    feed(&mut conn, &settings(&[(4, 3)]));
    feed(&mut conn, &client.headers(1, &get("/"), true));
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), false);
    assert_eq!(conn.send_data(1, b"hello", false), 3);
    assert!(feed(&mut conn, &settings(&[(4, 2)])).is_empty());
    assert_eq!(conn.streams[0].send_window, -1);
    assert!(feed(&mut conn, &window_update(1, 1)).is_empty(), "still not positive");
    let events = feed(&mut conn, &window_update(1, 1));
    assert!(matches!(events[..], [Event::WindowOpened { stream: 1 }]));
    assert_eq!(conn.send_data(1, b"lo", true), 1);
    // A change that takes a window past 2^31-1.
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &get("/"), true));
    feed(&mut conn, &window_update(1, (1 << 31) - 1 - 65_535));
    assert_eq!(
        conn_error(&mut conn, &settings(&[(4, 65_536)])),
        ErrorCode::FlowControlError
    );
}

#[test]
fn ping_frames() {
    let (mut conn, _) = started();
    assert_eq!(
        conn_error(&mut conn, &frame(kind::PING, 0, 1, &[0; 8])),
        ErrorCode::ProtocolError
    );
    let (mut conn, _) = started();
    assert_eq!(
        conn_error(&mut conn, &frame(kind::PING, 0, 0, &[0; 6])),
        ErrorCode::FrameSizeError
    );
    let (mut conn, _) = started();
    let mut input = ping(true, *b"invalid\0");
    input.extend(ping(false, *b"h2spec\0\0"));
    feed(&mut conn, &input);
    let out = frames(conn.output());
    assert_eq!(
        out,
        vec![Out {
            kind: kind::PING,
            flags: flag::ACK,
            stream: 0,
            payload: b"h2spec\0\0".to_vec()
        }]
    );
}

#[test]
fn goaway_frames() {
    let (mut conn, _) = started();
    assert_eq!(
        conn_error(&mut conn, &frame(kind::GOAWAY, 0, 1, &[0; 8])),
        ErrorCode::ProtocolError
    );
    let (mut conn, _) = started();
    assert_eq!(
        conn_error(&mut conn, &frame(kind::GOAWAY, 0, 0, &[0; 7])),
        ErrorCode::FrameSizeError
    );
    // 7: an unknown code is no special case; debug data is fine.
    let (mut conn, _) = started();
    let mut input = frame(kind::GOAWAY, 0, 0, b"\0\0\0\0\0\0\0\xffh2spec");
    input.extend(ping(false, [1; 8]));
    let events = feed(&mut conn, &input);
    assert!(matches!(events[..], [Event::GoAway]));
    assert_eq!(frames(conn.output()).len(), 1);
}

#[test]
fn window_update_frames() {
    let (mut conn, _) = started();
    assert_eq!(conn_error(&mut conn, &window_update(0, 0)), ErrorCode::ProtocolError);
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &request("POST", "/"), false));
    let (events, rsts) = feed_rsts(&mut conn, &window_update(1, 0));
    assert!(matches!(
        events[..],
        [Event::Reset {
            stream: 1,
            code: ErrorCode::ProtocolError
        }]
    ));
    assert_eq!(rsts, vec![(1, ErrorCode::ProtocolError)]);
    let (mut conn, _) = started();
    assert_eq!(
        conn_error(&mut conn, b"\x00\x00\x03\x08\x00\x00\x00\x00\x00\x00\x00\x01"),
        ErrorCode::FrameSizeError
    );
    // 6.9.1: past 2^31-1.
    let (mut conn, _) = started();
    let mut input = window_update(0, (1 << 31) - 1);
    input.extend(window_update(0, (1 << 31) - 1));
    assert_eq!(conn_error(&mut conn, &input), ErrorCode::FlowControlError);
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &request("POST", "/"), false));
    let mut input = window_update(1, (1 << 31) - 1);
    input.extend(window_update(1, (1 << 31) - 1));
    let (_, rsts) = feed_rsts(&mut conn, &input);
    assert_eq!(rsts, vec![(1, ErrorCode::FlowControlError)]);
    // Fine on stream 0 and on a stream; ignored on a closed one.
    let (mut conn, mut client) = started();
    feed(&mut conn, &window_update(0, 1));
    feed(&mut conn, &client.headers(1, &get("/"), true));
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), true);
    frames(conn.output());
    assert!(feed_rsts(&mut conn, &window_update(1, 1)).1.is_empty());
}

#[test]
fn connection_window_opens_blocked_streams() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &settings(&[(4, 100_000)]));
    feed(&mut conn, &client.headers(1, &get("/"), true));
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), false);
    let body = vec![b'x'; 70_000];
    assert_eq!(conn.send_data(1, &body, false), 65_535);
    assert_eq!(conn.send_capacity(1), 0);
    let out = frames(conn.output());
    let sizes: Vec<usize> = out
        .iter()
        .filter(|f| f.kind == kind::DATA)
        .map(|f| f.payload.len())
        .collect();
    assert_eq!(
        sizes,
        vec![16_384, 16_384, 16_384, 16_383],
        "split at the max frame size"
    );
    let events = feed(&mut conn, &window_update(0, 10));
    assert!(matches!(events[..], [Event::WindowOpened { stream: 0 }]));
    assert_eq!(conn.send_capacity(1), 10);
}

#[test]
fn continuation_frames() {
    // Several CONTINUATIONs make one block.
    let (mut conn, mut client) = started();
    let block = client.block(&get("/"));
    let mut input = frame(kind::HEADERS, flag::END_STREAM, 1, &block[..2]);
    input.extend(frame(kind::CONTINUATION, 0, 1, &block[2..4]));
    input.extend(frame(kind::CONTINUATION, 0, 1, &[]));
    input.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, &block[4..]));
    let events = feed(&mut conn, &input);
    let (stream, _, end_stream) = request_stream(&events);
    assert_eq!((stream, end_stream), (1, true));
    assert!(conn.header_block.is_none(), "the block buffer is freed");
    // Followed by DATA; on stream 0; after END_HEADERS; after DATA.
    type Case = fn(&[u8]) -> Vec<u8>;
    let cases: Vec<Case> = vec![
        |b| {
            [
                frame(kind::HEADERS, 0, 1, b),
                frame(kind::CONTINUATION, 0, 1, b"\x82"),
                data(1, b"test", true),
            ]
            .concat()
        },
        |b| [frame(kind::HEADERS, 0, 1, b), frame(kind::CONTINUATION, 4, 0, b"\x82")].concat(),
        |b| [frame(kind::HEADERS, 5, 1, b), frame(kind::CONTINUATION, 4, 1, b"\x82")].concat(),
        |b| {
            [
                frame(kind::HEADERS, 4, 1, b),
                frame(kind::CONTINUATION, 4, 1, b"\x82"),
                frame(kind::CONTINUATION, 4, 1, b"\x82"),
            ]
            .concat()
        },
        |b| {
            [
                frame(kind::HEADERS, 0, 1, b),
                data(1, b"test", true),
                frame(kind::CONTINUATION, 4, 1, b"\x82"),
            ]
            .concat()
        },
    ];
    for case in cases {
        let (mut conn, mut client) = started();
        let block = client.block(&request("POST", "/"));
        assert_eq!(conn_error(&mut conn, &case(&block)), ErrorCode::ProtocolError);
    }
}

#[test]
fn push_promise_is_a_protocol_error() {
    let (mut conn, mut client) = started();
    let mut payload = vec![0, 0, 0, 3];
    payload.extend(client.block(&get("/")));
    assert_eq!(
        conn_error(&mut conn, &frame(kind::PUSH_PROMISE, 4, 1, &payload)),
        ErrorCode::ProtocolError
    );
}

// ---- h2spec 8.x: HTTP message exchanges -----------------------------------

#[test]
fn post_with_trailers() {
    let (mut conn, mut client) = started();
    let mut fields = request("POST", "/");
    fields.push(("trailer".into(), "x-test".into()));
    let mut input = client.headers(1, &fields, false);
    input.extend(data(1, b"test", false));
    input.extend(client.headers(1, &[("x-test".into(), "ok".into())], true));
    let events = feed(&mut conn, &input);
    assert!(matches!(events[2], Event::BodyEnd { stream: 1 }));
    assert_eq!(events.len(), 3);
    assert_eq!(conn.open_streams(), 1, "until the response ends");
}

#[test]
fn trailers_must_end_the_stream_and_hold_no_pseudo_header() {
    for (trailers, end) in [
        (vec![("x-test", "ok")], false),
        (vec![(":method", "POST")], true),
        (vec![("X-A", "b")], true),
    ] {
        let (mut conn, mut client) = started();
        let mut input = client.headers(1, &request("POST", "/"), false);
        input.extend(data(1, b"test", false));
        let trailers: Vec<(String, String)> = trailers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        input.extend(client.headers(1, &trailers, end));
        let (events, rsts) = feed_rsts(&mut conn, &input);
        assert!(matches!(
            events[2],
            Event::Reset {
                stream: 1,
                code: ErrorCode::ProtocolError
            }
        ));
        assert_eq!(rsts, vec![(1, ErrorCode::ProtocolError)]);
    }
}

#[test]
fn malformed_requests_are_reset_without_an_event() {
    let (mut conn, mut client) = started();
    let mut fields = get("/");
    fields.push(("X-TEST".into(), "ok".into()));
    let (events, rsts) = feed_rsts(&mut conn, &client.headers(1, &fields, true));
    assert!(events.is_empty());
    assert_eq!(rsts, vec![(1, ErrorCode::ProtocolError)]);
    assert_eq!(conn.open_streams(), 0);
    // The connection goes on.
    let events = feed(&mut conn, &client.headers(3, &get("/"), true));
    assert_eq!(request_stream(&events).0, 3);
}

#[test]
fn content_length_must_match_the_data() {
    for frames_in in [
        vec![data(1, b"test", true)],
        vec![data(1, b"test", false), data(1, b"test", true)],
    ] {
        let (mut conn, mut client) = started();
        let mut fields = request("POST", "/");
        fields.push(("content-length".into(), "1".into()));
        let mut input = client.headers(1, &fields, false);
        input.extend(frames_in.concat());
        let (events, rsts) = feed_rsts(&mut conn, &input);
        assert!(matches!(
            events[1],
            Event::Reset {
                stream: 1,
                code: ErrorCode::ProtocolError
            }
        ));
        assert_eq!(rsts, vec![(1, ErrorCode::ProtocolError)]);
    }
    // Too little at the end is malformed too; exactly right is fine.
    for (body, ok) in [(&b"tes"[..], false), (&b"test"[..], true)] {
        let (mut conn, mut client) = started();
        let mut fields = request("POST", "/");
        fields.push(("content-length".into(), "4".into()));
        let mut input = client.headers(1, &fields, false);
        input.extend(data(1, body, true));
        let (events, _) = feed_rsts(&mut conn, &input);
        assert_eq!(matches!(events[1], Event::Data { end_stream: true, .. }), ok);
    }
}

// ---- HPACK (h2spec hpack) ------------------------------------------------

#[test]
fn hpack_errors_are_compression_errors() {
    for block in [
        &b"\x80"[..],
        b"\xc6\x82",
        b"\x7f\x07\x00",
        b"\x82\x21",
        b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x49\x50\x9f\xff",
        b"\x00\x85\xf2\xb2\x4a\x84\xff\x83\x49\x50\x90",
        b"\x00\x85\xf2\xb2\x4a\x84\xff\x87\x49\x51\xff\xff\xff\xfa\x7f",
        b"\x3f\xe2\x1f\x82\x84\x86",
    ] {
        let (mut conn, _) = started();
        let input = frame(kind::HEADERS, 5, 1, block);
        assert_eq!(conn_error(&mut conn, &input), ErrorCode::CompressionError, "{block:?}");
    }
}

#[test]
fn hpack_dynamic_table_carries_across_requests() {
    let (mut conn, mut client) = started();
    let mut fields = get("/");
    fields.push(("x-long-header-name".into(), "a value worth indexing".into()));
    for id in [1, 3, 5] {
        let events = feed(&mut conn, &client.headers(id, &fields, true));
        let (_, head, _) = request_stream(&events);
        assert_eq!(head.headers["x-long-header-name"], "a value worth indexing");
    }
}

/// A session with a split header block, padding, a flow-control exchange
/// and a connection error at its end, fed at every byte boundary: the same
/// events and output each time, and the error at the same frame.
#[test]
fn every_split_of_a_failing_session_gives_the_same_result() {
    let mut client = Client::new();
    let mut input = preface();
    input.extend(settings(&[(frame::setting::INITIAL_WINDOW_SIZE, 2)]));
    let block = client.block(&request("POST", "/split"));
    input.extend(frame(
        kind::HEADERS,
        flag::PADDED,
        1,
        &[&[2][..], &block[..4], &[0, 0]].concat(),
    ));
    input.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, &block[4..]));
    input.extend(frame(kind::DATA, flag::PADDED | flag::END_STREAM, 1, b"\x01ab\0"));
    input.extend(window_update(1, 5));
    input.extend(frame(kind::PING, 0, 1, &[0; 8]));
    input.extend(ping(false, [9; 8]));
    let run = |cuts: &[usize]| {
        let mut conn = Connection::new(ServerSettings::default());
        let mut events = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut at = 0;
        let mut error = None;
        let mut out = Vec::new();
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            pending.extend_from_slice(&input[at..cut.max(at)]);
            at = cut.max(at);
            match conn.receive(&pending, &mut events) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
            out.append(conn.output());
        }
        out.append(conn.output());
        let events: Vec<String> = events
            .iter()
            .map(|e| format!("{e:?}").replace(char::is_whitespace, ""))
            .collect();
        let events: Vec<String> = events
            .into_iter()
            .map(|e| if e.starts_with("Request") { "Request".into() } else { e })
            .collect();
        (events, out, error)
    };
    let whole = run(&[]);
    assert_eq!(whole.2.as_ref().map(|e| e.code), Some(ErrorCode::ProtocolError));
    assert_eq!(whole.0, vec!["Request", "Data{stream:1,data:b\"ab\",end_stream:true}"]);
    for cut in 0..=input.len() {
        assert_eq!(run(&[cut]), whole, "cut at {cut}");
    }
    let bytewise: Vec<usize> = (0..input.len()).collect();
    assert_eq!(run(&bytewise), whole);
}
