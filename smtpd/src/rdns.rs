//! Reverse DNS for the connect phase (`smtpd.reverse_dns`, `smtpd.dns_timeout`).
//!
//! The client's name is looked up like the C library would, without blocking past the
//! budget: first `/etc/hosts`, then one PTR query over UDP to the first `nameserver`
//! of `/etc/resolv.conf`. The name is used only when it is forward-confirmed (it
//! resolves back to the client's address; that lookup runs in a helper thread that is
//! abandoned at the deadline), as Postfix does. Any failure, timeout or garbage answer
//! names the client `unknown`: the name is for logs and the Received header only and
//! never grants anything (docs/invariants.md G5).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where names come from: the system's files and resolver, or stand-ins in tests.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The hosts file (`/etc/hosts`).
    pub hosts_file: PathBuf,
    /// The server PTR queries go to (the first `nameserver` of `/etc/resolv.conf`).
    pub nameserver: Option<SocketAddr>,
    /// The forward lookup that confirms a name (the C library's, through std).
    pub forward: fn(&str) -> Vec<IpAddr>,
}

impl Sources {
    /// The system's hosts file, resolver and forward lookups.
    pub fn system() -> Sources {
        Sources {
            hosts_file: PathBuf::from("/etc/hosts"),
            nameserver: resolver(),
            forward: system_forward,
        }
    }
}

/// The client's confirmed name, or `unknown`, within `budget`.
pub fn client_name(ip: IpAddr, budget: Duration) -> String {
    client_name_from(ip, budget, &Sources::system())
}

/// [`client_name`] with the given sources.
pub fn client_name_from(ip: IpAddr, budget: Duration, src: &Sources) -> String {
    let deadline = Instant::now() + budget;
    let found = hosts_name(&src.hosts_file, ip)
        .or_else(|| src.nameserver.and_then(|ns| ptr_lookup(ns, ip, deadline)));
    let Some(name) = found else {
        return "unknown".into();
    };
    if forward_confirmed(&name, ip, deadline, src.forward) {
        name
    } else {
        log::info!("reverse name {name} of [{ip}] does not resolve back; using unknown");
        "unknown".into()
    }
}

/// The addresses the C library gives `host`.
fn system_forward(host: &str) -> Vec<IpAddr> {
    (host, 0)
        .to_socket_addrs()
        .map(|it| it.map(|a| a.ip()).collect())
        .unwrap_or_default()
}

/// The first name the hosts file gives `ip`.
fn hosts_name(hosts_file: &Path, ip: IpAddr) -> Option<String> {
    let text = std::fs::read_to_string(hosts_file).ok()?;
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            let addr: IpAddr = words.next()?.parse().ok()?;
            (addr == ip).then(|| words.next().map(str::to_ascii_lowercase))?
        })
}

fn forward_confirmed(
    name: &str,
    ip: IpAddr,
    deadline: Instant,
    forward: fn(&str) -> Vec<IpAddr>,
) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let host = name.to_string();
    let spawned = std::thread::Builder::new()
        .name("rdns-forward".into())
        .spawn(move || {
            let _ = tx.send(forward(&host));
        });
    if spawned.is_err() {
        return false;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    rx.recv_timeout(left)
        .map(|addrs| addrs.contains(&ip))
        .unwrap_or(false)
}

/// One PTR query to `server`, answered before `deadline`.
fn ptr_lookup(server: SocketAddr, ip: IpAddr, deadline: Instant) -> Option<String> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let sock = UdpSocket::bind(bind).ok()?;
    sock.connect(server).ok()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let id = (std::process::id() as u16) ^ (nanos as u16);
    sock.send(&query(id, &ptr_name(ip))).ok()?;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            log::info!("reverse DNS for [{ip}] timed out; using unknown");
            return None;
        }
        sock.set_read_timeout(Some(left)).ok()?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        if let Some(answer) = parse_ptr_answer(&buf[..n], id) {
            return answer;
        }
    }
}

/// The first `nameserver` of `/etc/resolv.conf`.
fn resolver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next()? == "nameserver").then(|| {
            w.next()?
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })?
    })
}

/// `4.3.2.1.in-addr.arpa` or the nibble form under `ip6.arpa`.
pub fn ptr_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// A DNS query for `name` PTR IN with recursion desired.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 12, 0, 1]);
    q
}

/// `None`: not our answer (keep waiting). `Some(None)`: our answer, no usable name.
/// `Some(Some(name))`: the first PTR record.
pub fn parse_ptr_answer(msg: &[u8], id: u16) -> Option<Option<String>> {
    if msg.len() < 12 || msg[..2] != id.to_be_bytes() || msg[2] & 0x80 == 0 {
        return None;
    }
    if msg[3] & 0x0f != 0 {
        return Some(None);
    }
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    let an = u16::from_be_bytes([msg[6], msg[7]]);
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(msg, pos)? + 4;
    }
    for _ in 0..an {
        pos = skip_name(msg, pos)?;
        let rr = msg.get(pos..pos + 10)?;
        let rtype = u16::from_be_bytes([rr[0], rr[1]]);
        let len = usize::from(u16::from_be_bytes([rr[8], rr[9]]));
        let rdata = pos + 10;
        if rtype == 12 {
            return Some(
                read_name(msg, rdata)
                    .filter(|n| sloop_common::config::values::parse_hostname(n).is_ok()),
            );
        }
        pos = rdata + len;
    }
    Some(None)
}

fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xc0 == 0xc0 => return Some(pos + 2),
            l => pos += 1 + usize::from(l),
        }
    }
}

fn read_name(msg: &[u8], mut pos: usize) -> Option<String> {
    let mut labels: Vec<String> = Vec::new();
    for _ in 0..128 {
        let len = *msg.get(pos)?;
        if len == 0 {
            return Some(labels.join(".").to_ascii_lowercase());
        }
        if len & 0xc0 == 0xc0 {
            let lo = *msg.get(pos + 1)?;
            pos = (usize::from(len & 0x3f) << 8) | usize::from(lo);
            continue;
        }
        let label = msg.get(pos + 1..pos + 1 + usize::from(len))?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        pos += 1 + usize::from(len);
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn ptr_names() {
        assert_eq!(
            ptr_name("192.0.2.1".parse().unwrap()),
            "1.2.0.192.in-addr.arpa"
        );
        let v6 = ptr_name("2001:db8::1".parse().unwrap());
        assert!(v6.starts_with("1.0.0.0.") && v6.ends_with(".8.b.d.0.1.0.0.2.ip6.arpa"));
    }

    /// A reply to `query(7, ...)` with one PTR answer using a compression pointer.
    #[test]
    fn parses_answer_with_compression() {
        let mut msg = query(7, "1.2.0.192.in-addr.arpa");
        msg[2] |= 0x80;
        msg[7] = 1; // ancount
        msg.extend_from_slice(&[0xc0, 12, 0, 12, 0, 1, 0, 0, 0, 60]);
        let rdata = [
            4, b'm', b'a', b'i', b'l', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o',
            b'm', 0,
        ];
        msg.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        msg.extend_from_slice(&rdata);
        assert_eq!(
            parse_ptr_answer(&msg, 7),
            Some(Some("mail.example.com".into()))
        );
        assert_eq!(parse_ptr_answer(&msg, 8), None);
        msg[3] |= 3; // NXDOMAIN
        assert_eq!(parse_ptr_answer(&msg, 7), Some(None));
    }

    #[test]
    fn garbage_is_not_a_name() {
        assert_eq!(parse_ptr_answer(&[0, 7, 0x80, 0, 0, 0, 0, 5], 7), None);
        let mut msg = vec![0, 7, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        msg.extend_from_slice(&[0xc0, 0xff]);
        assert_eq!(parse_ptr_answer(&msg, 7), None);
    }

    /// Forward lookups of the test names: both resolve to 192.0.2.9 only.
    fn fake_forward(name: &str) -> Vec<IpAddr> {
        match name {
            "host.example.test" | "ptr.example.test" => vec!["192.0.2.9".parse().unwrap()],
            _ => Vec::new(),
        }
    }

    /// A DNS server on loopback answering every PTR query with `name` (or never).
    fn fake_ptr_server(name: Option<&'static str>) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = sock.recv_from(&mut buf) {
                let Some(name) = name else { continue };
                let mut msg = buf[..n].to_vec();
                msg[2] |= 0x80;
                msg[7] = 1;
                msg.extend_from_slice(&[0xc0, 12, 0, 12, 0, 1, 0, 0, 0, 60]);
                let mut rdata = Vec::new();
                for label in name.split('.') {
                    rdata.push(label.len() as u8);
                    rdata.extend_from_slice(label.as_bytes());
                }
                rdata.push(0);
                msg.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                msg.extend_from_slice(&rdata);
                let _ = sock.send_to(&msg, peer);
            }
        });
        addr
    }

    fn sources(hosts: &str, nameserver: Option<SocketAddr>) -> (Sources, PathBuf) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("sloop-rdns-{}-{n}", std::process::id()));
        std::fs::write(&path, hosts).unwrap();
        let src = Sources {
            hosts_file: path.clone(),
            nameserver,
            forward: fake_forward,
        };
        (src, path)
    }

    /// The name the client gets, from the hosts file or a PTR answer, is checked
    /// itself, and only a forward-confirmed name is used.
    #[test]
    fn the_client_is_named_by_hosts_or_ptr_when_confirmed() {
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let budget = Duration::from_secs(5);
        let (src, f) = sources("# comment\n192.0.2.9 Host.Example.Test alias\n", None);
        assert_eq!(client_name_from(ip, budget, &src), "host.example.test");
        std::fs::remove_file(f).unwrap();
        let (src, f) = sources("", Some(fake_ptr_server(Some("ptr.example.test"))));
        assert_eq!(client_name_from(ip, budget, &src), "ptr.example.test");
        std::fs::remove_file(f).unwrap();
        // A PTR name that does not resolve back to the client is not used.
        let (src, f) = sources("", Some(fake_ptr_server(Some("liar.example.test"))));
        assert_eq!(client_name_from(ip, budget, &src), "unknown");
        std::fs::remove_file(f).unwrap();
        // A silent server: unknown, once the budget is spent.
        let (src, f) = sources("", Some(fake_ptr_server(None)));
        let short = Duration::from_millis(200);
        assert_eq!(client_name_from(ip, short, &src), "unknown");
        std::fs::remove_file(f).unwrap();
    }
}
