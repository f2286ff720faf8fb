//! The limits against hostile clients, inbound flow control and what the
//! connection keeps while idle.

use super::*;
use crate::h2::frame::{flag, kind};
use crate::h2::test_client::*;

fn post(client: &mut Client, id: u32) -> Vec<u8> {
    client.headers(id, &request("POST", "/"), false)
}

#[test]
fn a_header_block_past_the_slack_is_a_connection_error() {
    let (mut conn, mut client) = started_with(ServerSettings {
        max_header_list_size: 1024,
        ..ServerSettings::default()
    });
    let block = client.block(&get("/"));
    let mut input = frame(kind::HEADERS, 0, 1, &block);
    let chunk = vec![0x82; 1000];
    for _ in 0..=(1024 + HEADER_BLOCK_SLACK) / 1000 {
        input.extend(frame(kind::CONTINUATION, 0, 1, &chunk));
    }
    assert_eq!(conn_error(&mut conn, &input), ErrorCode::EnhanceYourCalm);
}

#[test]
fn a_head_too_large_is_an_event_and_its_body_is_dropped() {
    let (mut conn, mut client) = started_with(ServerSettings {
        max_header_list_size: 200,
        ..ServerSettings::default()
    });
    let mut fields = request("POST", "/");
    fields.push(("x-big".into(), "v".repeat(150)));
    // Split over a CONTINUATION.
    let block = client.block(&fields);
    let mut input = frame(kind::HEADERS, 0, 1, &block[..10]);
    input.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, &block[10..]));
    input.extend(data_split(1, &[b'x'; 40_000], false));
    let events = feed(&mut conn, &input);
    assert!(matches!(events[..], [Event::HeadTooLarge { stream: 1 }]), "{events:?}");
    // The dropped body was given back.
    let out = frames(conn.output());
    let given: u32 = out
        .iter()
        .filter(|f| f.kind == kind::WINDOW_UPDATE && f.stream == 1)
        .map(|f| f.u32_at(0))
        .sum();
    assert_eq!(given, 32_768, "in batches of half a window");
    assert_eq!(conn.streams[0].recv_released, 40_000 - 32_768);
    conn.send_headers(1, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, &HeaderMap::new(), true);
    let out = frames(conn.output());
    assert_eq!(decode_block(&out[0].payload), vec![(":status".into(), "431".into())]);
    assert_eq!(
        (out[1].kind, out[1].stream, out[1].code()),
        (kind::RST_STREAM, 1, 0),
        "NO_ERROR: stop sending"
    );
    // Its late DATA is ignored; the connection goes on.
    assert!(feed_rsts(&mut conn, &data(1, b"late", true)).1.is_empty());
    let events = feed(&mut conn, &client.headers(3, &get("/"), true));
    assert_eq!(request_stream(&events).0, 3);
}

#[test]
fn empty_frame_floods() {
    // CONTINUATION without data.
    let (mut conn, mut client) = started();
    let block = client.block(&get("/"));
    let mut input = frame(kind::HEADERS, 0, 1, &block);
    for _ in 0..EMPTY_FRAME_BUDGET {
        input.extend(frame(kind::CONTINUATION, 0, 1, &[]));
    }
    let mut events = Vec::new();
    assert_eq!(
        conn.receive(&input, &mut events),
        Ok(input.len()),
        "the budget itself is fine"
    );
    assert_eq!(
        conn_error(&mut conn, &frame(kind::CONTINUATION, 0, 1, &[])),
        ErrorCode::EnhanceYourCalm
    );
    // DATA without data.
    let (mut conn, mut client) = started();
    let mut input = post(&mut client, 1);
    for _ in 0..=EMPTY_FRAME_BUDGET {
        input.extend(data(1, b"", false));
    }
    assert_eq!(conn_error(&mut conn, &input), ErrorCode::EnhanceYourCalm);
    // Interleaved with data, fine.
    let (mut conn, mut client) = started();
    let mut input = post(&mut client, 1);
    for i in 0..1000 {
        input.extend(data(1, if i % 50 == 0 { b"x" } else { b"" }, false));
    }
    feed(&mut conn, &input);
}

#[test]
fn rapid_reset_is_budgeted() {
    let (mut conn, mut client) = started();
    let mut input = Vec::new();
    for i in 0..RESET_BUDGET {
        input.extend(post(&mut client, 2 * i + 1));
        input.extend(rst_stream(2 * i + 1, 8));
    }
    let events = feed(&mut conn, &input);
    assert_eq!(events.len(), 2 * RESET_BUDGET as usize);
    let id = 2 * RESET_BUDGET + 1;
    let mut input = post(&mut client, id);
    input.extend(rst_stream(id, 8));
    assert_eq!(conn_error(&mut conn, &input), ErrorCode::EnhanceYourCalm);
}

#[test]
fn resets_after_the_response_started_are_free_and_responses_pay_back() {
    let (mut conn, mut client) = started();
    for i in 0..3 * RESET_BUDGET {
        let id = 2 * i + 1;
        feed(&mut conn, &client.headers(id, &get("/events"), true));
        // Every other stream is reset before its response, the others
        // after theirs started (a reader closing its event stream).
        if i % 2 == 0 {
            conn.send_headers(id, StatusCode::OK, &HeaderMap::new(), false);
        }
        feed(&mut conn, &rst_stream(id, 8));
        frames(conn.output());
    }
    assert!(conn.reset_debt <= 1);
}

#[test]
fn provoked_stream_errors_are_budgeted() {
    let (mut conn, mut client) = started();
    let mut fields = get("/");
    fields.push(("Bad".into(), "x".into()));
    let mut input = Vec::new();
    for i in 0..=RESET_BUDGET {
        input.extend(client.headers(2 * i + 1, &fields, true));
    }
    assert_eq!(conn_error(&mut conn, &input), ErrorCode::EnhanceYourCalm);
}

#[test]
fn control_frames_for_a_client_that_does_not_read() {
    let (mut conn, _) = started();
    let pings: Vec<u8> = (0..1000).flat_map(|_| ping(false, [7; 8])).collect();
    let mut events = Vec::new();
    let mut error = None;
    for _ in 0..10 {
        if let Err(e) = conn.receive(&pings, &mut events) {
            error = Some(e.code);
            break;
        }
    }
    assert_eq!(error, Some(ErrorCode::EnhanceYourCalm));
    assert!(conn.output().len() < MAX_QUEUED_CONTROL + 17 + 64 * 1024);
    // A client that reads is answered forever.
    let (mut conn, _) = started();
    for _ in 0..20 {
        feed(&mut conn, &pings);
        // The shell writes half, then all.
        let half = conn.output().len() / 2;
        conn.output().drain(..half);
        feed(&mut conn, &settings(&[]));
        *conn.output() = Vec::new();
    }
}

#[test]
fn data_beyond_the_windows() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &post(&mut client, 1));
    let mut input = Vec::new();
    for _ in 0..3 {
        input.extend(data(1, &[0; 16_384], false));
    }
    input.extend(data(1, &[0; 16_383], false));
    feed(&mut conn, &input);
    frames(conn.output());
    let (events, rsts) = feed_rsts(&mut conn, &data(1, b"x", false));
    assert!(matches!(
        events[..],
        [Event::Reset {
            stream: 1,
            code: ErrorCode::FlowControlError
        }]
    ));
    assert_eq!(rsts, vec![(1, ErrorCode::FlowControlError)]);
    // The connection's window: give nothing back and send past it on
    // ignored streams... the connection credits as data arrives, so only
    // a client that ignores the WINDOW_UPDATEs gets there.
    let (mut conn, mut client) = started();
    let mut input = post(&mut client, 1);
    input.extend(post(&mut client, 3));
    input.extend(post(&mut client, 5));
    for id in [1, 3, 5] {
        for _ in 0..2 {
            input.extend(data(id, &[0; 16_384], false));
        }
    }
    assert_eq!(conn_error(&mut conn, &input), ErrorCode::FlowControlError);
}

#[test]
fn released_credit_goes_back_in_batches() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &post(&mut client, 1));
    feed(&mut conn, &data_split(1, &[0; 20_000], false));
    assert!(frames(conn.output()).is_empty(), "nothing back yet");
    conn.release(1, 20_000);
    assert!(conn.output().is_empty(), "below half a window");
    feed(&mut conn, &data_split(1, &[0; 16_000], false));
    let out = frames(conn.output());
    assert_eq!(out.len(), 1, "the connection's credit, half its window used");
    assert_eq!(
        (out[0].kind, out[0].stream, out[0].u32_at(0)),
        (kind::WINDOW_UPDATE, 0, 36_000)
    );
    conn.release(1, 16_000);
    let out = frames(conn.output());
    assert_eq!(
        (out[0].kind, out[0].stream, out[0].u32_at(0)),
        (kind::WINDOW_UPDATE, 1, 36_000)
    );
    // More than was held is clamped to the window.
    conn.release(1, usize::MAX);
    assert!(conn.output().is_empty());
    assert_eq!(conn.streams[0].recv_window + conn.streams[0].recv_released, 65_535);
}

#[test]
fn a_smaller_window_applies_once_acknowledged() {
    let mut conn = Connection::new(ServerSettings {
        initial_window_size: 1000,
        ..ServerSettings::default()
    });
    let mut client = Client::new();
    // Before the ACK the client may use the default window.
    let mut input = preface();
    input.extend(post(&mut client, 1));
    input.extend(data_split(1, &[0; 30_000], false));
    feed(&mut conn, &input);
    feed(&mut conn, &settings_ack());
    assert_eq!(conn.streams[0].recv_window, 35_535 - 64_535);
    let (_, rsts) = feed_rsts(&mut conn, &data(1, b"x", false));
    assert_eq!(rsts, vec![(1, ErrorCode::FlowControlError)]);
    // A stream opened after the ACK gets 1000.
    feed(&mut conn, &post(&mut client, 3));
    assert_eq!(conn.streams[0].recv_window, 1000);
}

#[test]
fn a_larger_window_raises_the_connection_window_at_once() {
    let mut conn = Connection::new(ServerSettings {
        initial_window_size: 1 << 20,
        ..ServerSettings::default()
    });
    let out = frames(conn.output());
    assert_eq!(
        (out[1].kind, out[1].stream, out[1].u32_at(0)),
        (kind::WINDOW_UPDATE, 0, (1 << 20) - 65_535)
    );
}

#[test]
fn ending_the_response_early_stops_the_request_body() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &post(&mut client, 1));
    conn.send_headers(1, StatusCode::PAYLOAD_TOO_LARGE, &HeaderMap::new(), true);
    let out = frames(conn.output());
    assert_eq!((out[1].kind, out[1].stream, out[1].code()), (kind::RST_STREAM, 1, 0));
    // In-flight DATA and trailers are ignored, and their bytes credited.
    let mut input = data_split(1, &[0; 40_000], false);
    input.extend(client.headers(1, &[("x-t".into(), "1".into())], true));
    let (events, rsts) = feed_rsts(&mut conn, &input);
    assert!(events.is_empty() && rsts.is_empty());
    assert_eq!(conn.conn_recv_window, conn.conn_recv_target());
}

#[test]
fn shell_reset_and_late_frames() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &post(&mut client, 1));
    conn.reset(1, ErrorCode::Cancel);
    conn.reset(1, ErrorCode::Cancel);
    let out = frames(conn.output());
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].kind, out[0].code()), (kind::RST_STREAM, 8));
    assert!(feed_rsts(&mut conn, &data(1, b"late", false)).1.is_empty());
    assert_eq!(conn.send_data(1, b"x", true), 0);
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), true);
    assert!(conn.output().is_empty());
}

#[test]
fn response_heads() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &post(&mut client, 1));
    assert_eq!(conn.send_data(1, b"early", false), 0, "no DATA before the head");
    conn.send_headers(1, StatusCode::CONTINUE, &HeaderMap::new(), true);
    assert_eq!(conn.open_streams(), 1, "a 1xx never ends the stream");
    let mut headers = HeaderMap::new();
    headers.insert("x-big", "v".repeat(40_000).parse().unwrap());
    conn.send_headers(1, StatusCode::OK, &headers, false);
    conn.send_headers(1, StatusCode::OK, &headers, false);
    let out = frames(conn.output());
    let kinds: Vec<(u8, u8)> = out.iter().map(|f| (f.kind, f.flags)).collect();
    assert_eq!(
        kinds,
        vec![
            (kind::HEADERS, flag::END_HEADERS),
            (kind::HEADERS, 0),
            (kind::CONTINUATION, 0),
            (kind::CONTINUATION, flag::END_HEADERS)
        ],
        "the second final head is ignored"
    );
    let block: Vec<u8> = out[1..].iter().flat_map(|f| f.payload.clone()).collect();
    assert_eq!(decode_block(&block)[1].1.len(), 40_000);
}

#[test]
fn larger_client_frames_are_used() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &settings(&[(5, 40_000)]));
    feed(&mut conn, &client.headers(1, &get("/"), true));
    conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), false);
    assert_eq!(conn.send_data(1, &[1; 50_000], true), 50_000);
    let out = frames(conn.output());
    let sizes: Vec<usize> = out.iter().skip(2).map(|f| f.payload.len()).collect();
    assert_eq!(sizes, vec![40_000, 10_000]);
}

#[test]
fn nothing_is_kept_while_idle() {
    let (mut conn, mut client) = started();
    let mut input = client.headers(1, &request("POST", "/"), false);
    let block = client.block(&get("/"));
    input.extend(frame(kind::HEADERS, flag::END_STREAM, 3, &block[..3]));
    input.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 3, &block[3..]));
    input.extend(data(1, b"body", true));
    feed(&mut conn, &input);
    for id in [1, 3] {
        conn.send_headers(id, StatusCode::OK, &HeaderMap::new(), false);
        conn.send_data(id, b"done", true);
    }
    // The shell wrote it all and freed the output.
    *conn.output() = Vec::new();
    assert_eq!(conn.open_streams(), 0);
    assert_eq!(conn.streams.capacity(), 0);
    assert!(conn.header_block.is_none());
    // Frames that need no answer do not allocate an output.
    feed(&mut conn, &settings_ack());
    feed(&mut conn, &window_update(0, 100));
    feed(&mut conn, &priority(5, 0, 1));
    assert_eq!(conn.output().capacity(), 0);
    // Small: the connection and a stream.
    assert!(
        std::mem::size_of::<Connection>() <= 512,
        "{}",
        std::mem::size_of::<Connection>()
    );
    assert!(std::mem::size_of::<Stream>() <= 48, "{}", std::mem::size_of::<Stream>());
}

#[test]
fn goaway_after_a_graceful_one_keeps_the_last_stream() {
    let (mut conn, mut client) = started();
    feed(&mut conn, &client.headers(1, &get("/"), true));
    conn.go_away();
    conn.go_away();
    feed(&mut conn, &client.headers(3, &get("/"), true));
    let mut events = Vec::new();
    assert!(conn.receive(&frame(kind::PING, 0, 1, &[0; 8]), &mut events).is_err());
    let out = frames(conn.output());
    let goaways: Vec<(u32, u32)> = out
        .iter()
        .filter(|f| f.kind == kind::GOAWAY)
        .map(|f| (f.u32_at(0), f.code()))
        .collect();
    assert_eq!(goaways, vec![(1, 0), (1, 1)]);
}
