//! Immediate ACKs for a client reading a reply that comes in pieces.
//!
//! A peer that writes one reply in several small `write(2)`s with Nagle's algorithm on
//! (libmilter does: an edit, then the final reply) sends the second piece only once the
//! first is acknowledged. Linux delays that ACK, up to 40 ms, hoping data of ours will
//! carry it, and we have none to send while we wait for the rest of the reply: every
//! such reply costs 40 ms. Measured with OpenDKIM: 45 ms per message instead of 2.6 ms
//! (docs/benchmarks.md, "The 40 ms stall").

use std::net::TcpStream;

/// Acknowledges at once what has been read on `stream` (`TCP_QUICKACK`). The flag is
/// not sticky: the kernel goes back to delaying ACKs by itself. Call it when part of a
/// reply has been read and the rest is not buffered. Best effort: a failure only costs
/// the delay.
pub fn ack_now(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn an_acknowledged_stream_still_carries_data_both_ways() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut b, _) = listener.accept().unwrap();
        b.write_all(b"one").unwrap();
        let mut got = [0u8; 3];
        a.read_exact(&mut got).unwrap();
        ack_now(&a);
        assert!(socket2::SockRef::from(&a).tcp_quickack().unwrap());
        a.write_all(b"two").unwrap();
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"two");
    }
}
