use super::*;

/// What a caller sees feeding `pieces` in order, each copied into its own
/// buffer: the payload, the input consumed, whether the body is done, and
/// the input left over after it (the rest of the piece that finished it and
/// every later piece). Asserts what must hold on every call.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    payload: Vec<u8>,
    consumed: usize,
    done: bool,
    following: Vec<u8>,
}

fn feed(pieces: &[&[u8]]) -> Result<Outcome, ChunkedError> {
    let mut d = ChunkedDecoder::new();
    let mut o = Outcome {
        payload: Vec::new(),
        consumed: 0,
        done: false,
        following: Vec::new(),
    };
    for piece in pieces {
        if o.done {
            o.following.extend_from_slice(piece);
            continue;
        }
        let mut buf = piece.to_vec();
        // Room past the input must stay untouched too.
        buf.extend_from_slice(b"~~");
        let p = d.decode_in_place(&mut buf, piece.len())?;
        assert!(
            p.payload <= p.consumed && p.consumed <= piece.len(),
            "{p:?} of {}",
            piece.len()
        );
        assert_eq!(&buf[p.consumed..], &[&piece[p.consumed..], &b"~~"[..]].concat()[..]);
        assert_eq!(p.done, d.is_done());
        if !p.done {
            assert_eq!(p.consumed, piece.len(), "input left over before done");
        }
        o.payload.extend_from_slice(&buf[..p.payload]);
        o.consumed += p.consumed;
        o.done = p.done;
        if p.done {
            o.following.extend_from_slice(&piece[p.consumed..]);
            // Once done, nothing more is taken.
            let mut again = piece[p.consumed..].to_vec();
            let n = again.len();
            assert_eq!(
                d.decode_in_place(&mut again, n),
                Ok(Progress {
                    payload: 0,
                    consumed: 0,
                    done: true
                })
            );
            assert_eq!(again, &piece[p.consumed..]);
        }
    }
    Ok(o)
}

/// `payload` in chunks of the given sizes (the rest as one more chunk), each
/// size line carrying `ext`, then the last chunk, `trailers` and CRLF.
fn encode(payload: &[u8], sizes: &[usize], ext: &str, trailers: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = payload;
    let mut sizes = sizes.iter().copied().chain(std::iter::repeat(usize::MAX));
    while !rest.is_empty() {
        let n = sizes.next().unwrap().clamp(1, rest.len());
        let mut head = [0; 18];
        let h = chunk_header(n, &mut head);
        out.extend_from_slice(&head[..h - 2]);
        out.extend_from_slice(ext.as_bytes());
        out.extend_from_slice(CHUNK_END);
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(CHUNK_END);
        rest = &rest[n..];
    }
    if trailers.is_empty() && ext.is_empty() {
        out.extend_from_slice(LAST_CHUNK);
    } else {
        out.extend_from_slice(format!("0{ext}\r\n{trailers}\r\n").as_bytes());
    }
    out
}

const NEXT: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

fn bodies() -> Vec<(Vec<u8>, Vec<u8>)> {
    let data: Vec<u8> = (0..=255u8).cycle().take(40).collect();
    vec![
        (Vec::new(), encode(b"", &[], "", "")),
        (b"hello".to_vec(), encode(b"hello", &[], "", "")),
        (data.clone(), encode(&data, &[1, 2, 17, 3], "", "")),
        (data.clone(), encode(&data, &[16, 16], ";a=b", "")),
        (
            data.clone(),
            encode(&data, &[7], " ; n = \"q;\\\"\" ;m", "X-Sum: 12\r\nEtag:\r\n"),
        ),
        // Payload that looks like framing is just payload.
        (b"0\r\n\r\n".to_vec(), encode(b"0\r\n\r\n", &[2], "", "")),
        (b"a".to_vec(), b"0001\r\na\r\n000\r\n\r\n".to_vec()),
    ]
}

#[test]
fn chunking_never_changes_the_answer() {
    // Every split of the input into two calls, and into three.
    for (payload, body) in bodies() {
        let input = [&body[..], NEXT].concat();
        let want = Outcome {
            payload: payload.clone(),
            consumed: body.len(),
            done: true,
            following: NEXT.to_vec(),
        };
        assert_eq!(feed(&[&input]).unwrap(), want, "{:?}", String::from_utf8_lossy(&body));
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let got = feed(&[&input[..a], &input[a..b], &input[b..]]).unwrap();
                assert_eq!(got, want, "split at {a},{b} of {:?}", String::from_utf8_lossy(&body));
            }
        }
    }
}

#[test]
fn every_proper_prefix_is_incomplete_and_fully_consumed() {
    for (_, body) in bodies() {
        for end in 0..body.len() {
            let got = feed(&[&body[..end]]).unwrap();
            assert!(!got.done, "done after {end} of {:?}", String::from_utf8_lossy(&body));
            assert_eq!(got.consumed, end);
        }
    }
}

#[test]
fn payload_is_moved_to_the_front_and_following_bytes_kept() {
    let mut buf = b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\nNEXT".to_vec();
    let len = buf.len();
    let mut d = ChunkedDecoder::new();
    let p = d.decode_in_place(&mut buf, len).unwrap();
    assert_eq!(
        p,
        Progress {
            payload: 5,
            consumed: len - 4,
            done: true
        }
    );
    assert_eq!(&buf[..5], b"abcde");
    assert_eq!(&buf[p.consumed..], b"NEXT");
    assert!(d.is_done());
}

#[test]
fn extensions_and_trailers_are_accepted_and_dropped() {
    let ok: &[&[u8]] = &[
        b"5;a\r\nhello\r\n0\r\n\r\n",
        b"5;a=b\r\nhello\r\n0;last\r\n\r\n",
        b"5 ; a = b ; c\r\nhello\r\n0\r\n\r\n",
        b"5\t;\tn=\"\"\r\nhello\r\n0\r\n\r\n",
        b"5;a=\"x;y=\\\"z\\\\\"\r\nhello\r\n0\r\n\r\n",
        b"5;a=\"\xff\x80 \t\"\r\nhello\r\n0\r\n\r\n",
        b"5;!#$%&'*+-.^_`|~09AZaz=!#$%&'*+-.^_`|~\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX-A: 1\r\nEtag:\r\nY: a b\t\xff\r\n\r\n",
        b"0005\r\nhello\r\n0000000000000000\r\n\r\n",
        b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
    ];
    for input in ok {
        let got = feed(&[input]).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(input)));
        assert_eq!(got.payload, b"hello", "{:?}", String::from_utf8_lossy(input));
        assert!(
            got.done && got.consumed == input.len(),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn limits_are_inclusive() {
    // A size line of exactly MAX_SIZE_LINE bytes, a trailer section of exactly MAX_TRAILERS.
    let line = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(usize::from(MAX_SIZE_LINE) - 2));
    assert_eq!(feed(&[line.as_bytes()]).unwrap().payload, b"hello");
    let field = format!("X: {}\r\n", "v".repeat(usize::from(MAX_TRAILERS) - 7));
    let trailers = format!("0\r\n{field}\r\n");
    assert_eq!(trailers.len() - 3, usize::from(MAX_TRAILERS));
    assert!(feed(&[trailers.as_bytes()]).unwrap().done);
    // The largest chunk size is accepted: the decoder then waits for its data.
    let got = feed(&[b"4000000000000000\r\nabc"]).unwrap();
    assert_eq!((got.payload.as_slice(), got.done), (&b"abc"[..], false));
}

fn malformed() -> Vec<(Vec<u8>, ChunkedError)> {
    use ChunkedError::*;
    let mut v: Vec<(Vec<u8>, ChunkedError)> = [
        (&b"g\r\n"[..], BadSize),
        (b"\r\n", BadSize),
        (b" 5\r\n", BadSize),
        (b"-5\r\n", BadSize),
        (b"+5\r\n", BadSize),
        (b"0x5\r\n", BadSize),
        (b"5\x0b\r\n", BadSize),
        (b"5\r\nhello\r\n\r\n", BadSize),
        // BWS belongs to an extension: it must lead to a ';'.
        (b"5 \r\n", BadExtension),
        (b"5;\r\n", BadExtension),
        (b"5;a \r\n", BadExtension),
        (b"5;a=\r\n", BadExtension),
        (b"5;a= \r\n", BadExtension),
        (b"5;a=b c\r\n", BadExtension),
        (b"5;a=\"x\r\n", BadExtension),
        (b"5;a=\"x\"y\r\n", BadExtension),
        (b"5;a\0\r\n", BadExtension),
        (b"5;a=\"x\0\"\r\n", BadExtension),
        (b"5;a=b\x7f\r\n", BadExtension),
        (b"5;a=\"\\\x01\"\r\n", BadExtension),
        (b"5;a(b)\r\n", BadExtension),
        (b"5\nhello\r\n", BadLineEnd),
        (b"5;a=b\n", BadLineEnd),
        (b"5;a=\"x\n\"\r\n", BadLineEnd),
        (b"5\rhello\r\n", BadLineEnd),
        (b"5\r\r\n", BadLineEnd),
        (b"5\r\nhello\n0\r\n\r\n", BadLineEnd),
        (b"5\r\nhelloX\r\n", BadLineEnd),
        (b"5\r\nhello\r0\r\n\r\n", BadLineEnd),
        (b"5\r\nhel\rlo\r\n", BadLineEnd),
        (b"5\r\nhello\r\n0\n\r\n", BadLineEnd),
        (b"10000000000000000\r\n", SizeOverflow),
        (b"00000000000000005\r\n", SizeOverflow),
        (b"ffffffffffffffffff\r\n", SizeOverflow),
        (b"4000000000000001\r\n", SizeOverflow),
        (b"0\r\nX: y\n\r\n", BadTrailer),
        (b"0\r\nX: y\r\r\n", BadTrailer),
        (b"0\r\nbad trailer\r\n\r\n", BadTrailer),
        (b"0\r\nX : y\r\n\r\n", BadTrailer),
        (b"0\r\n: y\r\n\r\n", BadTrailer),
        (b"0\r\n X: y\r\n\r\n", BadTrailer),
        (b"0\r\nX: y\r\n z\r\n\r\n", BadTrailer),
        (b"0\r\nX: a\0b\r\n\r\n", BadTrailer),
        (b"0\r\nX: a\x7f\r\n\r\n", BadTrailer),
        (b"0\r\n\n", BadTrailer),
        (b"0\r\n\rX", BadTrailer),
    ]
    .into_iter()
    .map(|(i, e)| (i.to_vec(), e))
    .collect();
    v.push((format!("5;{}\r\n", "a".repeat(4998)).into_bytes(), LineTooLong));
    v.push((format!("5{}\r\n", ";a".repeat(2048)).into_bytes(), LineTooLong));
    let many = format!("0\r\n{}\r\n", format!("X-Field: {}\r\n", "v".repeat(90)).repeat(200));
    v.push((many.into_bytes(), TrailersTooLong));
    let one = format!("0\r\nX: {}\r\n\r\n", "v".repeat(usize::from(MAX_TRAILERS)));
    v.push((one.into_bytes(), TrailersTooLong));
    v
}

#[test]
fn malformed_input_is_refused_and_stays_refused() {
    for (input, want) in malformed() {
        let shown = String::from_utf8_lossy(&input[..input.len().min(40)]).into_owned();
        assert_eq!(feed(&[&input]), Err(want), "{shown:?}");
        // The same error whichever way the input is cut.
        let bytewise: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed(&bytewise), Err(want), "{shown:?} byte by byte");
        let mut d = ChunkedDecoder::new();
        let mut buf = input.clone();
        assert_eq!(d.decode_in_place(&mut buf, input.len()), Err(want), "{shown:?}");
        // Failed for good: valid input, or none, changes nothing.
        let mut valid = LAST_CHUNK.to_vec();
        assert_eq!(d.decode_in_place(&mut valid, LAST_CHUNK.len()), Err(want), "{shown:?}");
        assert_eq!(d.decode_in_place(&mut [], 0), Err(want), "{shown:?}");
        assert!(!d.is_done());
    }
}

#[test]
fn done_takes_nothing_more() {
    let mut d = ChunkedDecoder::new();
    let mut buf = LAST_CHUNK.to_vec();
    assert_eq!(
        d.decode_in_place(&mut buf, 5),
        Ok(Progress {
            payload: 0,
            consumed: 5,
            done: true
        })
    );
    let mut more = b"5\r\nhello\r\n".to_vec();
    assert_eq!(
        d.decode_in_place(&mut more, 10),
        Ok(Progress {
            payload: 0,
            consumed: 0,
            done: true
        })
    );
    assert_eq!(more, b"5\r\nhello\r\n");
    assert_eq!(
        d.decode_in_place(&mut [], 0),
        Ok(Progress {
            payload: 0,
            consumed: 0,
            done: true
        })
    );
}

#[test]
fn empty_input_is_no_progress() {
    let mut d = ChunkedDecoder::new();
    assert_eq!(
        d.decode_in_place(&mut [0; 4], 0),
        Ok(Progress {
            payload: 0,
            consumed: 0,
            done: false
        })
    );
    assert!(!d.is_done());
}

#[test]
fn chunk_header_writes_lowercase_hex_and_crlf() {
    let cases: &[(usize, &[u8])] = &[
        (1, b"1\r\n"),
        (0xf, b"f\r\n"),
        (0x10, b"10\r\n"),
        (26, b"1a\r\n"),
        (4096, b"1000\r\n"),
    ];
    for &(len, want) in cases {
        let mut out = [0; 18];
        let n = chunk_header(len, &mut out);
        assert_eq!(&out[..n], want, "{len}");
    }
    let mut out = [0; 18];
    assert_eq!(chunk_header(usize::MAX, &mut out), 2 + 2 * std::mem::size_of::<usize>());
    // What it writes, the decoder reads back as the same size.
    for len in [1u64, 9, 10, 255, 256, 65535, 1 << 40, (1 << 62) - 1] {
        let Ok(len) = usize::try_from(len) else { continue };
        let n = chunk_header(len, &mut out);
        let mut d = ChunkedDecoder::new();
        let p = d.decode_in_place(&mut out.clone(), n).unwrap();
        assert_eq!(
            (p.consumed, d.state, d.remaining),
            (n, State::Data, len as u64),
            "{len}"
        );
    }
}

#[test]
#[should_panic(expected = "last chunk")]
fn chunk_header_refuses_zero() {
    chunk_header(0, &mut [0; 18]);
}

#[test]
fn state_stays_small() {
    // One decoder per open stream: it must not grow with what it reads.
    assert!(
        std::mem::size_of::<ChunkedDecoder>() <= 32,
        "{}",
        std::mem::size_of::<ChunkedDecoder>()
    );
}
