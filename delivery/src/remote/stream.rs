//! The byte stream under an SMTP session: plain TCP, or TLS after STARTTLS. Timeouts
//! are always set on the TCP socket underneath, so they hold in both cases.

use rustls::{ClientConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::TcpStream;

/// A session's connection.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// Left behind for an instant while the connection is being upgraded.
    Closed,
}

impl Stream {
    /// The TCP socket, for timeouts and shutdown.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(t) => Some(&t.sock),
            Stream::Closed => None,
        }
    }

    /// Part of a reply has been read and the rest has not come: acknowledge it at once
    /// ([`sloop_common::quickack`]), for a server that writes a multi-line reply line
    /// by line.
    pub fn ack_now(&self) {
        if let Some(tcp) = self.tcp() {
            sloop_common::quickack::ack_now(tcp);
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
            Stream::Closed => Err(closed()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
            Stream::Closed => Err(closed()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
            Stream::Closed => Err(closed()),
        }
    }
}
