//! A loopback SMTP sink for the remote delivery tests: scripted replies, and a record
//! of every command and every message (un-dot-stuffed) per connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Replies the sink gives.
#[derive(Clone)]
pub struct Script {
    /// `None`: accept and say nothing (a hung server).
    pub greeting: Option<String>,
    /// EHLO extension lines; `None` answers EHLO with 502 (HELO only).
    pub ehlo: Option<Vec<String>>,
    pub mail: String,
    /// Reply to `RCPT TO:<addr>` given the address.
    pub rcpt: Arc<dyn Fn(&str) -> String + Send + Sync>,
    pub data: String,
    /// Reply after the final dot.
    pub end: String,
    /// Close the connection, without a reply, on a MAIL after the first message.
    pub drop_second_mail: bool,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            greeting: Some("220 sink.test ESMTP".into()),
            ehlo: Some(vec![
                "PIPELINING".into(),
                "SIZE 10000000".into(),
                "8BITMIME".into(),
            ]),
            mail: "250 2.1.0 Ok".into(),
            rcpt: Arc::new(|_| "250 2.1.5 Ok".to_string()),
            data: "354 End data with <CR><LF>.<CR><LF>".into(),
            end: "250 2.0.0 Ok: queued as SINK1".into(),
            drop_second_mail: false,
        }
    }
}

/// What one connection carried.
#[derive(Debug, Default, Clone)]
pub struct Conn {
    pub commands: Vec<String>,
    pub messages: Vec<Vec<u8>>,
    /// Whether the client's first MAIL and RCPTs arrived in one read (pipelined).
    pub pipelined: bool,
}

/// A running sink on 127.0.0.1.
pub struct Sink {
    pub port: u16,
    pub conns: Arc<Mutex<Vec<Conn>>>,
}

impl Sink {
    pub fn start(script: Script) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let c2 = conns.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let idx = {
                    let mut v = c2.lock().unwrap();
                    v.push(Conn::default());
                    v.len() - 1
                };
                let (s, c) = (script.clone(), c2.clone());
                std::thread::spawn(move || serve(stream, &s, &c, idx));
            }
        });
        Sink { port, conns }
    }

    pub fn conns(&self) -> Vec<Conn> {
        self.conns.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, s: &Script, conns: &Mutex<Vec<Conn>>, idx: usize) {
    let mut out = stream.try_clone().unwrap();
    let mut input = BufReader::new(stream);
    let Some(greeting) = &s.greeting else {
        // Hold the connection open, silent, until the client gives up.
        let mut buf = String::new();
        let _ = input.read_line(&mut buf);
        return;
    };
    let say = |out: &mut TcpStream, text: &str| {
        let _ = out.write_all(format!("{text}\r\n").as_bytes());
    };
    say(&mut out, greeting);
    let mut first_mail = true;
    loop {
        let mut line = String::new();
        if input.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("MAIL") && first_mail {
            first_mail = false;
            let buffered = String::from_utf8_lossy(input.buffer()).to_string();
            conns.lock().unwrap()[idx].pipelined = buffered.contains("RCPT TO");
        }
        conns.lock().unwrap()[idx].commands.push(cmd.clone());
        let reply = match upper.split_whitespace().next().unwrap_or("") {
            "EHLO" => match &s.ehlo {
                Some(ext) => {
                    let mut lines = vec!["250-sink.test".to_string()];
                    for (i, e) in ext.iter().enumerate() {
                        let sep = if i + 1 == ext.len() { ' ' } else { '-' };
                        lines.push(format!("250{sep}{e}"));
                    }
                    if ext.is_empty() {
                        lines = vec!["250 sink.test".into()];
                    }
                    lines.join("\r\n")
                }
                None => "502 5.5.1 EHLO not implemented".into(),
            },
            "HELO" => "250 sink.test".into(),
            "MAIL" if s.drop_second_mail && !conns.lock().unwrap()[idx].messages.is_empty() => {
                return;
            }
            "MAIL" => s.mail.clone(),
            "RCPT" => {
                let addr = cmd
                    .split_once('<')
                    .and_then(|(_, r)| r.split_once('>'))
                    .map(|(a, _)| a.to_string())
                    .unwrap_or_default();
                (s.rcpt)(&addr)
            }
            "DATA" => {
                say(&mut out, &s.data);
                if !s.data.starts_with('3') {
                    continue;
                }
                let msg = read_data(&mut input);
                conns.lock().unwrap()[idx].messages.push(msg);
                s.end.clone()
            }
            "RSET" | "NOOP" => "250 2.0.0 Ok".into(),
            "QUIT" => {
                say(&mut out, "221 2.0.0 Bye");
                return;
            }
            _ => "500 5.5.2 what?".into(),
        };
        say(&mut out, &reply);
    }
}

/// Reads DATA up to the `.` line, undoing dot-stuffing.
fn read_data(input: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut msg = Vec::new();
    loop {
        let mut line = Vec::new();
        if input.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return msg;
        }
        if line == b".\r\n" {
            return msg;
        }
        if line.starts_with(b".") {
            line.remove(0);
        }
        msg.extend(line);
    }
}
