//! The h2spec conformance suite (github.com/summerwind/h2spec) against
//! [`Connection`] driven by a minimal blocking TCP shell (cleartext, prior
//! knowledge): every response is `200` with an 11-byte body, sent as the
//! windows allow once the request has ended. Ignored by default: it needs
//! the `h2spec` binary on the PATH (`go install
//! github.com/summerwind/h2spec/cmd/h2spec@latest`); run it with
//! `cargo test --lib h2::h2spec -- --ignored --nocapture`. Strict mode
//! (`-S`): the 145 tests and the one that wants a GOAWAY before the close.

use super::*;
use http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const BODY: &[u8] = b"hello world";

fn serve(mut socket: TcpStream) {
    let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
    let mut conn = Connection::new(ServerSettings::default());
    let mut pending: Vec<u8> = Vec::new();
    let mut bodies: HashMap<u32, usize> = HashMap::new();
    let mut events = Vec::new();
    let mut buf = [0u8; 32 * 1024];
    loop {
        // Respond to what is due, as far as the windows allow.
        for (&stream, sent) in bodies.iter_mut() {
            *sent += conn.send_data(stream, &BODY[*sent..], true);
        }
        bodies.retain(|_, sent| *sent < BODY.len());
        let out = std::mem::take(conn.output());
        if socket.write_all(&out).is_err() {
            return;
        }
        let n = match socket.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let result = conn.receive(&pending, &mut events);
        for event in events.drain(..) {
            let respond = match event {
                Event::Request { stream, end_stream, .. } => end_stream.then_some((stream, StatusCode::OK)),
                Event::Data {
                    stream,
                    data,
                    end_stream,
                } => {
                    conn.release(stream, data.len());
                    end_stream.then_some((stream, StatusCode::OK))
                }
                Event::BodyEnd { stream } => Some((stream, StatusCode::OK)),
                Event::HeadTooLarge { stream } => Some((stream, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)),
                Event::Reset { stream, .. } => {
                    bodies.remove(&stream);
                    None
                }
                _ => None,
            };
            if let Some((stream, status)) = respond {
                let mut headers = HeaderMap::new();
                headers.insert("content-type", http::HeaderValue::from_static("text/plain"));
                conn.send_headers(stream, status, &headers, false);
                bodies.insert(stream, 0);
            }
        }
        match result {
            Ok(n) => {
                pending.drain(..n);
            }
            Err(_) => {
                let _ = socket.write_all(conn.output());
                return;
            }
        }
    }
}

#[test]
#[ignore = "needs the h2spec binary"]
fn h2spec_conformance() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for socket in listener.incoming().flatten() {
            std::thread::spawn(move || serve(socket));
        }
    });
    let output = std::process::Command::new("h2spec")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-o", "3", "-S"])
        .output()
        .expect("h2spec on the PATH");
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}");
    assert!(output.status.success(), "h2spec failed");
}
