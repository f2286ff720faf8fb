//! HTTP/1.1 framing ssegate owns: head parsing and the chunked coding,
//! pure (no I/O), so that they test in microseconds and fuzz.

pub mod chunked;
pub mod head;
pub mod write;
