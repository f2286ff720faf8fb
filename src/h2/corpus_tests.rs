//! Hostile bytes: a corpus of malformed and abusive inputs, and
//! deterministic mutations of a valid session, fed in several splits with
//! the shell's calls interleaved. Whatever comes in: no panic, whole frames
//! consumed only (what is left is less than one frame), the output bounded
//! by the control-frame cap, at most `max_concurrent_streams` streams, and
//! a failed connection stays failed and silent.

use super::conn::{Connection, Event, ServerSettings, MAX_QUEUED_CONTROL};
use super::frame::{kind, ErrorCode, HEADER_LEN, MAX_FRAME_SIZE, PREFACE};
use super::test_client::*;
use http::{HeaderMap, StatusCode};

/// What a single receive may add to the output: the answering control
/// frames up to their cap, one frame past it, and a GOAWAY.
const MAX_ADDED_BY_RECEIVE: usize = MAX_QUEUED_CONTROL + 64 + 300;

/// Hostile inputs, each given after a valid preface and SETTINGS.
fn corpus() -> Vec<Vec<u8>> {
    let mut c = Client::new();
    let get = c.block(&get("/"));
    let mut v: Vec<Vec<u8>> = vec![
        // Frame headers alone, every type, odd lengths and flags.
        (0..=0xffu8).flat_map(|t| frame(t, 0xff, 1, &[])).collect(),
        (0..=10u8).flat_map(|t| frame(t, 0, 0, &[0xff; 3])).collect(),
        (0..=10u8)
            .flat_map(|t| frame(t, 0x2d, 0x7fff_ffff, &[0xff; 9]))
            .collect(),
        // Length fields at and past the limit, with nothing after.
        vec![0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1],
        vec![0x00, 0x40, 0x01, 1, 4, 0, 0, 0, 1],
        // Padding at every edge.
        frame(kind::DATA, 0x08, 1, &[0]),
        frame(kind::HEADERS, 0x28, 1, &[0, 0, 0, 0]),
        frame(kind::HEADERS, 0x2c, 1, &[255, 0, 0, 0, 0, 0, 0x82]),
        // HPACK: bad indexes, huge integers, table size updates, strings
        // longer than the block, Huffman garbage.
        frame(kind::HEADERS, 5, 1, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        frame(kind::HEADERS, 5, 1, &[0x3f, 0xff, 0xff, 0xff, 0x0f, 0x82]),
        frame(kind::HEADERS, 5, 1, &[0x20, 0x3f, 0xe1, 0x1f, 0x82]),
        frame(kind::HEADERS, 5, 1, &[0x00, 0x7f, 0xff, 0xff, 0xff, 0x0f]),
        frame(kind::HEADERS, 5, 1, &[0x40, 0x81, 0xff, 0x81, 0xff]),
        frame(kind::HEADERS, 5, 1, &[0x10, 0x00, 0x00]),
        frame(kind::HEADERS, 5, 1, &[0xbe]),
        // Many dynamic table insertions, then references to them.
        frame(
            kind::HEADERS,
            5,
            1,
            &[[0x40, 1, b'a', 0x7f, 0x00].as_slice(), &[b'v'; 127], &[0xbe; 200]].concat(),
        ),
        // Settings: every id, extreme values.
        settings(&(0..=10).map(|id| (id, u32::MAX)).collect::<Vec<_>>()),
        settings(&[(4, 0x7fff_ffff), (4, 0), (5, 16_777_215), (1, 0), (3, 0)]),
        // Window updates: zero, max, on every kind of stream.
        [
            window_update(0, 0x7fff_ffff),
            window_update(0, 1),
            window_update(1, 0),
            window_update(2, 5),
        ]
        .concat(),
        // A CONTINUATION flood of one-byte frames.
        [
            frame(kind::HEADERS, 0, 1, &get[..1]),
            (0..20_000)
                .flat_map(|_| frame(kind::CONTINUATION, 0, 1, &[0x82]))
                .collect(),
        ]
        .concat(),
        // Rapid reset.
        (0..300u32)
            .flat_map(|i| [frame(kind::HEADERS, 4, 2 * i + 1, &get), rst_stream(2 * i + 1, 8)].concat())
            .collect(),
        // PING and SETTINGS floods.
        (0..10_000).flat_map(|_| ping(false, [1; 8])).collect(),
        (0..10_000).flat_map(|_| settings(&[])).collect(),
        // Empty DATA flood on an open stream.
        [
            frame(kind::HEADERS, 4, 1, &get),
            (0..1000).flat_map(|_| data(1, b"", false)).collect(),
        ]
        .concat(),
        // Streams at the top of the id space.
        [
            frame(kind::HEADERS, 5, 0x7fff_ffff, &get),
            frame(kind::HEADERS, 5, 0x7fff_fffd, &get),
        ]
        .concat(),
        // GOAWAY, then more.
        [
            goaway(0x7fff_ffff, 0xffff_ffff),
            frame(kind::HEADERS, 5, 1, &get),
            ping(true, [0; 8]),
        ]
        .concat(),
        // Priority loops and self-dependencies.
        [
            priority(1, 3, 0),
            priority(3, 1, 0),
            priority(5, 5, 0),
            priority(7, 0x8000_0007, 0),
        ]
        .concat(),
    ];
    // A request whose stream then gets everything.
    let mut c2 = Client::new();
    let mut s = c2.headers(1, &request("POST", "/"), false);
    for t in 0..=10u8 {
        s.extend(frame(t, 0, 1, &[0; 8]));
    }
    v.push(s);
    v
}

/// A valid session, the seed of the mutations.
fn session() -> Vec<u8> {
    let mut c = Client::new();
    let mut s = settings(&[(4, 100), (5, 20_000)]);
    s.extend(settings_ack());
    s.extend(c.headers(1, &get("/a"), true));
    s.extend(c.headers(3, &request("POST", "/b"), false));
    s.extend(frame(kind::DATA, 0x08, 3, b"\x03body\0\0\0"));
    s.extend(c.headers(3, &[("x-t".into(), "1".into())], true));
    s.extend(ping(false, *b"abcdefgh"));
    s.extend(window_update(0, 1000));
    s.extend(window_update(1, 1000));
    let block = c.block(&request("PUT", "/c"));
    s.extend(frame(kind::HEADERS, 0, 5, &block[..2]));
    s.extend(frame(kind::CONTINUATION, 4, 5, &block[2..]));
    s.extend(rst_stream(5, 8));
    s.extend(goaway(0, 0));
    s
}

/// A small deterministic random source (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Feeds `input` in pieces chosen by `rng`, calling the shell's methods
/// in between, and checks the invariants throughout. Returns how many
/// streams the shell saw.
fn run(input: &[u8], settings: ServerSettings, rng: &mut Rng) -> usize {
    let mut conn = Connection::new(settings);
    let mut pending = preface();
    let mut events = Vec::new();
    let mut known: Vec<u32> = Vec::new();
    let mut at = 0;
    let mut failed = None;
    while at < input.len() {
        let take = 1 + rng.below(3000.min(input.len() - at));
        pending.extend_from_slice(&input[at..at + take]);
        at += take;
        let before = conn.output().len();
        let result = conn.receive(&pending, &mut events);
        let added = conn.output().len() - before;
        assert!(added <= MAX_ADDED_BY_RECEIVE, "one receive added {added} bytes");
        match result {
            Ok(n) => {
                assert!(n <= pending.len());
                pending.drain(..n);
                assert!(
                    pending.len() < HEADER_LEN + MAX_FRAME_SIZE as usize,
                    "{} bytes left",
                    pending.len()
                );
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        assert!(conn.open_streams() <= settings.max_concurrent_streams as usize);
        for event in events.drain(..) {
            match event {
                Event::Request { stream, .. } | Event::HeadTooLarge { stream } => known.push(stream),
                Event::Data { stream, data, .. } => conn.release(stream, data.len()),
                _ => {}
            }
        }
        // The shell: respond, send, reset, write some output.
        if let Some(&stream) = known.get(rng.below(known.len().max(1))) {
            match rng.below(6) {
                0 => conn.send_headers(stream, StatusCode::OK, &HeaderMap::new(), rng.below(2) == 0),
                1 => {
                    let cap = conn.send_capacity(stream);
                    let body = vec![b'x'; rng.below(70_000)];
                    let n = conn.send_data(stream, &body, rng.below(2) == 0);
                    assert!(n <= cap.min(body.len()));
                }
                2 => conn.reset(stream, ErrorCode::Cancel),
                3 => {
                    conn.ping();
                }
                4 => conn.go_away(),
                _ => conn.release(stream, rng.below(100_000)),
            }
        }
        let written = rng.below(conn.output().len() + 1);
        if written == conn.output().len() {
            *conn.output() = Vec::new();
        } else {
            conn.output().drain(..written);
        }
    }
    if let Some(e) = failed {
        let len = conn.output().len();
        assert_eq!(conn.receive(b"\0\0\0\x04\0\0\0\0\0", &mut events), Err(e));
        conn.send_headers(1, StatusCode::OK, &HeaderMap::new(), true);
        assert_eq!(conn.send_data(1, b"x", true), 0);
        conn.go_away();
        assert!(!conn.ping());
        assert_eq!(conn.output().len(), len, "silent once failed");
    }
    known.len()
}

fn settings_variants() -> [ServerSettings; 3] {
    [
        ServerSettings::default(),
        ServerSettings {
            max_concurrent_streams: 1,
            initial_window_size: 10,
            max_header_list_size: 100,
        },
        ServerSettings {
            max_concurrent_streams: 1000,
            initial_window_size: 1 << 30,
            max_header_list_size: u32::MAX,
        },
    ]
}

#[test]
fn hostile_corpus() {
    let mut rng = Rng(0x5eed);
    for (i, input) in corpus().iter().enumerate() {
        for settings in settings_variants() {
            for _ in 0..3 {
                let seed = rng.next();
                let mut split = Rng(seed | 1);
                let run_one = std::panic::AssertUnwindSafe(|| {
                    run(input, settings, &mut split);
                });
                if std::panic::catch_unwind(run_one).is_err() {
                    panic!("corpus entry {i} failed with split seed {seed:#x}");
                }
            }
        }
    }
}

#[test]
fn mutated_sessions() {
    let base = session();
    let mut rng = Rng(0xdead_beef);
    let mut streams = 0;
    for round in 0..1500 {
        let mut input = base.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(input.len());
            match rng.below(5) {
                0 => input[at] ^= 1 << rng.below(8),
                1 => input[at] = rng.next() as u8,
                2 => input.truncate(at),
                3 => input.insert(at, rng.next() as u8),
                _ => {
                    let from = rng.below(input.len());
                    let len = rng.below(40).min(input.len() - from);
                    let piece = input[from..from + len].to_vec();
                    input.splice(at..at, piece);
                }
            }
            if input.is_empty() {
                break;
            }
        }
        let settings = settings_variants()[round % 3];
        let mut split = Rng(rng.next() | 1);
        streams += run(&input, settings, &mut split);
    }
    assert!(streams > 500, "the mutations still reach the streams: {streams}");
}

/// The preface itself, mutated: refused or waited for, never more.
#[test]
fn mutated_prefaces() {
    for at in 0..PREFACE.len() {
        let mut input = PREFACE.to_vec();
        input[at] ^= 0x20;
        let mut conn = Connection::new(ServerSettings::default());
        let mut events = Vec::new();
        assert!(conn.receive(&input, &mut events).is_err());
        assert_eq!(
            conn.receive(&PREFACE[..at], &mut events).map_err(|e| e.code),
            Err(ErrorCode::ProtocolError)
        );
        let mut fresh = Connection::new(ServerSettings::default());
        assert_eq!(fresh.receive(&PREFACE[..at], &mut events), Ok(0));
    }
}
