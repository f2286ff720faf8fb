//! ssegate's HTTP/2 server connection on arbitrary client bytes, cut into
//! arbitrary pieces, with the shell's calls (response heads, DATA, resets,
//! credit given back, PING, GOAWAY, partial writes of the output)
//! interleaved. Never panics; consumes whole frames only, so what is left
//! over is less than one frame of the maximum size; one receive adds at
//! most the cap of answering control frames (plus a GOAWAY) to the output;
//! DATA sent never exceeds the windows; streams stay within
//! `max_concurrent_streams`; and a failed connection stays failed and
//! writes nothing more.
//!
//! Input: byte 0 picks the settings and whether a valid preface and
//! SETTINGS come first; then each byte below 0x80 feeds that many + 1
//! following bytes, and each byte from 0x80 is a shell call whose argument
//! is the next byte.
#![no_main]

use http::{HeaderMap, StatusCode};
use libfuzzer_sys::fuzz_target;
use ssegate::h2::conn::MAX_QUEUED_CONTROL;
use ssegate::h2::frame::{HEADER_LEN, MAX_FRAME_SIZE, PREFACE};
use ssegate::h2::{Connection, ErrorCode, Event, ServerSettings};

const MAX_ADDED_BY_RECEIVE: usize = MAX_QUEUED_CONTROL + 64 + 300;

fn settings(pick: u8) -> ServerSettings {
    ServerSettings {
        max_concurrent_streams: [1, 2, 8, 128][usize::from(pick >> 1 & 3)],
        initial_window_size: [0, 1, 1000, 65_535][usize::from(pick >> 3 & 3)],
        max_header_list_size: [64, 1024, 16_384, 65_536][usize::from(pick >> 5 & 3)],
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut ops)) = data.split_first() else {
        return;
    };
    let settings = settings(pick);
    let mut conn = Connection::new(settings);
    let mut pending = Vec::new();
    if pick & 1 == 1 {
        pending.extend_from_slice(PREFACE);
        pending.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0]);
    }
    let mut events = Vec::new();
    let mut streams: Vec<u32> = Vec::new();
    let mut failed = None;
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        if op < 0x80 {
            let take = (usize::from(op) + 1).min(ops.len());
            pending.extend_from_slice(&ops[..take]);
            ops = &ops[take..];
            let before = conn.output().len();
            let result = conn.receive(&pending, &mut events);
            assert!(conn.output().len() - before <= MAX_ADDED_BY_RECEIVE);
            match result {
                Ok(n) => {
                    assert!(n <= pending.len());
                    pending.drain(..n);
                    assert!(pending.len() < HEADER_LEN + MAX_FRAME_SIZE as usize);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            assert!(conn.open_streams() <= settings.max_concurrent_streams as usize);
            for event in events.drain(..) {
                if let Event::Request { stream, .. } | Event::HeadTooLarge { stream } = event {
                    streams.push(stream);
                }
            }
            continue;
        }
        let Some((&arg, rest)) = ops.split_first() else {
            break;
        };
        ops = rest;
        let stream = streams
            .get(usize::from(arg) % streams.len().max(1))
            .copied()
            .unwrap_or(u32::from(arg));
        match op & 7 {
            0 => {
                let status = [200, 204, 431, 100, 599][usize::from(arg % 5)];
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                conn.send_headers(stream, status, &HeaderMap::new(), arg & 1 == 1);
            }
            1 => {
                let capacity = conn.send_capacity(stream);
                let body = vec![b'x'; usize::from(arg) * 300];
                let sent = conn.send_data(stream, &body, arg & 1 == 1);
                assert!(sent <= capacity.min(body.len()));
            }
            2 => conn.reset(stream, ErrorCode::from_u32(u32::from(arg % 14))),
            3 => conn.release(stream, usize::from(arg) * 256),
            4 => {
                let written = (usize::from(arg) * 64).min(conn.output().len());
                if written == conn.output().len() {
                    *conn.output() = Vec::new();
                } else {
                    conn.output().drain(..written);
                }
            }
            5 => {
                conn.ping();
            }
            6 => conn.go_away(),
            _ => assert!(conn.send_capacity(stream) <= i32::MAX as usize),
        }
    }
    if let Some(e) = failed {
        let len = conn.output().len();
        assert_eq!(conn.receive(&[0; 9], &mut events), Err(e));
        conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), true);
        assert_eq!(conn.send_data(1, b"x", true), 0);
        conn.go_away();
        assert!(!conn.ping());
        assert_eq!(conn.output().len(), len);
        assert_eq!(conn.open_streams(), 0);
    }
});
