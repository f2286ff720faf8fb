use super::*;
use crate::h2::frame::{flag, kind};
use crate::h2::test_client::*;

/// Feeds all of `input` at once; every byte must be consumed.
fn feed(conn: &mut Connection, input: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    let n = conn.receive(input, &mut events).expect("no connection error");
    assert_eq!(n, input.len(), "whole frames consumed");
    events
}

/// Feeds `input` the way a shell does, in pieces of the given sizes,
/// keeping what was not consumed in front of the next piece.
fn feed_split(conn: &mut Connection, input: &[u8], cuts: &[usize]) -> Result<Vec<Event>, ConnectionError> {
    let mut events = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(at, input.len());
        pending.extend_from_slice(&input[at..cut]);
        at = cut;
        let n = conn.receive(&pending, &mut events)?;
        pending.drain(..n);
    }
    assert!(pending.is_empty(), "{} bytes left unconsumed", pending.len());
    Ok(events)
}

/// A connection past the preface and both SETTINGS, output emptied.
fn started() -> (Connection, Client) {
    started_with(ServerSettings::default())
}

fn started_with(settings: ServerSettings) -> (Connection, Client) {
    let mut conn = Connection::new(settings);
    let mut input = preface();
    input.extend(settings_ack());
    feed(&mut conn, &input);
    let out = frames(conn.output());
    assert_eq!(out.last().map(|f| (f.kind, f.flags)), Some((kind::SETTINGS, flag::ACK)));
    (conn, Client::new())
}

fn request_stream(events: &[Event]) -> (u32, &http::request::Parts, bool) {
    match events {
        [Event::Request {
            stream,
            head,
            end_stream,
        }] => (*stream, head, *end_stream),
        other => panic!("expected one request, got {other:?}"),
    }
}

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
