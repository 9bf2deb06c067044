//! The status pipe shared by all smtpd workers (pool_proto.rs): workers write 16-octet
//! `I`/`B` records to the write end, `sloopd` reads them from the non-blocking read end
//! in its event loop.
//!
//! The write end is close-on-exec except while a worker is spawned, so it reaches only
//! smtpd workers. Records are smaller than `PIPE_BUF`, so writes from many workers never
//! interleave; [`StatusReader`] still copes with a record split across reads. Garbage
//! (a record that does not decode) is the peer's fault: it is reported to the caller for
//! logging and skipped up to the next newline, and reading goes on.

use nix::fcntl::OFlag;
use sloop_common::pool_proto::{self, Availability, CLIENT_RECORD_LEN, RECORD_LEN};
use std::fs::File;
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// One thing read from the pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Status(u32, Availability),
    /// A worker's client address.
    Client(u32, IpAddr),
    /// Undecodable bytes, shown escaped for the log.
    Garbage(String),
}

/// The pipe: read end (non-blocking) and write end (for children).
#[derive(Debug)]
pub struct StatusPipe {
    read: File,
    write: OwnedFd,
    reader: StatusReader,
}

impl StatusPipe {
    /// Creates the pipe, both ends close-on-exec, the read end non-blocking.
    pub fn new() -> nix::Result<StatusPipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let flags = nix::fcntl::fcntl(read.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(read.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(StatusPipe {
            read: File::from(read),
            write,
            reader: StatusReader::default(),
        })
    }

    /// The read end, for registering with the poller.
    pub fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// The write end children inherit.
    pub fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// Reads everything available now and returns the records in it.
    pub fn drain(&mut self) -> io::Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.read.read(&mut buf) {
                // Cannot happen while we hold the write end; nothing more to read.
                Ok(0) => break,
                Ok(n) => out.extend(self.reader.feed(&buf[..n])),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// Splits a byte stream into status records.
#[derive(Debug, Default)]
pub struct StatusReader {
    pending: Vec<u8>,
}

impl StatusReader {
    /// Adds bytes; returns every complete record now available.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Record> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while self.pending.len() - start >= RECORD_LEN {
            if self.pending[start] == b'A' {
                if self.pending.len() - start < CLIENT_RECORD_LEN {
                    break;
                }
                let rec = &self.pending[start..start + CLIENT_RECORD_LEN];
                if let Some((pid, ip)) = pool_proto::decode_client(rec) {
                    out.push(Record::Client(pid, ip));
                    start += CLIENT_RECORD_LEN;
                    continue;
                }
            }
            let rec = &self.pending[start..start + RECORD_LEN];
            if let Some((pid, a)) = pool_proto::decode(rec) {
                out.push(Record::Status(pid, a));
                start += RECORD_LEN;
                continue;
            }
            // Resynchronise after the next newline (every record ends with one).
            let skip = match self.pending[start..].iter().position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => self.pending.len() - start,
            };
            let bad = &self.pending[start..start + skip];
            out.push(Record::Garbage(bad.escape_ascii().to_string()));
            start += skip;
        }
        self.pending.drain(..start);
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use pool_proto::encode;
    use std::io::Write;

    #[test]
    fn records_split_across_reads_are_joined() {
        let mut r = StatusReader::default();
        let rec = encode(42, Availability::Idle);
        assert!(r.feed(&rec[..5]).is_empty());
        assert_eq!(
            r.feed(&rec[5..]),
            vec![Record::Status(42, Availability::Idle)]
        );
    }

    #[test]
    fn client_records_are_read_whole() {
        let mut r = StatusReader::default();
        let ip: IpAddr = "127.0.0.7".parse().unwrap();
        let mut bytes = encode(7, Availability::Busy).to_vec();
        bytes.extend_from_slice(&pool_proto::encode_client(7, ip));
        assert_eq!(
            r.feed(&bytes[..30]),
            vec![Record::Status(7, Availability::Busy)]
        );
        assert!(r.feed(&bytes[30..60]).is_empty());
        assert_eq!(r.feed(&bytes[60..]), vec![Record::Client(7, ip)]);
    }

    #[test]
    fn garbage_is_reported_and_skipped_to_the_next_record() {
        let mut r = StatusReader::default();
        let mut bytes = b"hello\n".to_vec();
        bytes.extend_from_slice(&encode(7, Availability::Busy));
        bytes.extend_from_slice(b"X0000000007    \n");
        let got = r.feed(&bytes);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(matches!(&got[0], Record::Garbage(g) if g.contains("hello")));
        assert_eq!(got[1], Record::Status(7, Availability::Busy));
        assert!(matches!(&got[2], Record::Garbage(_)));
    }

    #[test]
    fn the_pipe_delivers_what_a_worker_writes() {
        let mut p = StatusPipe::new().unwrap();
        assert!(p.drain().unwrap().is_empty(), "non-blocking when empty");
        let mut w = File::from(p.write.try_clone().unwrap());
        w.write_all(&encode(9, Availability::Idle)).unwrap();
        w.write_all(&encode(9, Availability::Busy)).unwrap();
        assert_eq!(
            p.drain().unwrap(),
            vec![
                Record::Status(9, Availability::Idle),
                Record::Status(9, Availability::Busy)
            ]
        );
    }
}
