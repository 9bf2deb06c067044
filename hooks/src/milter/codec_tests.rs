//! Tests of the milter wire format (`codec.rs`): round trips, partial and malformed
//! packets, and the octets of each command as libmilter reads them.

use super::*;

fn decode_one(bytes: &[u8]) -> Result<Reply, MilterError> {
    match read_packet(bytes)? {
        Some((packet, used)) => {
            assert_eq!(used, bytes.len());
            Reply::decode(&packet)
        }
        None => panic!("incomplete packet"),
    }
}

fn all_replies() -> Vec<Reply> {
    vec![
        Reply::OptNeg {
            version: 6,
            actions: 0x1ff,
            protocol: 0x1fffff,
            symlists: vec![(0, "j {client_addr}".into()), (5, "i".into())],
        },
        Reply::Accept,
        Reply::Continue,
        Reply::Discard,
        Reply::Reject,
        Reply::Tempfail,
        Reply::Shutdown,
        Reply::ConnFail,
        Reply::ReplyCode("554 5.7.1 Gtube pattern".into()),
        Reply::AddHeader {
            name: "X-Spam".into(),
            value: "yes\n\tfolded".into(),
        },
        Reply::InsHeader {
            index: 0,
            name: "DKIM-Signature".into(),
            value: "v=1; a=rsa-sha256".into(),
        },
        Reply::ChgHeader {
            index: 2,
            name: "Subject".into(),
            value: String::new(),
        },
        Reply::ReplBody(b"new body\r\n".to_vec()),
        Reply::ReplBody(Vec::new()),
        Reply::AddRcpt("<a@example.org>".into()),
        Reply::AddRcptPar {
            rcpt: "<b@example.org>".into(),
            args: Some("NOTIFY=NEVER".into()),
        },
        Reply::AddRcptPar {
            rcpt: "<c@example.org>".into(),
            args: None,
        },
        Reply::DelRcpt("<d@example.org>".into()),
        Reply::ChgFrom {
            sender: "<e@example.org>".into(),
            args: None,
        },
        Reply::ChgFrom {
            sender: "<>".into(),
            args: Some(String::new()),
        },
        Reply::Quarantine("virus found".into()),
        Reply::Progress,
        Reply::Skip,
    ]
}

#[test]
fn every_reply_round_trips() {
    for reply in all_replies() {
        let bytes = encode_reply(&reply);
        let back = decode_one(&bytes).unwrap();
        assert_eq!(back, reply);
        assert_eq!(encode_reply(&back), bytes, "{}", reply.name());
    }
}

#[test]
fn partial_packets_ask_for_more() {
    let bytes = encode_reply(&Reply::AddRcpt("<a@b>".into()));
    for cut in 0..bytes.len() {
        assert!(read_packet(&bytes[..cut]).unwrap().is_none(), "cut {cut}");
    }
    let mut two = bytes.clone();
    two.extend_from_slice(&encode_reply(&Reply::Continue));
    let (first, used) = read_packet(&two).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(first.cmd, b'+');
    let (second, _) = read_packet(&two[used..]).unwrap().unwrap();
    assert_eq!(second.cmd, b'c');
}

#[test]
fn bad_lengths_are_protocol_errors() {
    let err = read_packet(&[0, 0, 0, 0, b'c']).unwrap_err();
    assert_eq!(err.to_string(), "protocol error: packet of length 0");
    let err = read_packet(&[0, 0x10, 0, 1]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "protocol error: packet length 1048577 exceeds 1048576"
    );
    let err = read_packet(&[0xff, 0xff, 0xff, 0xff]).unwrap_err();
    assert!(err.to_string().contains("exceeds"));
    // The largest allowed length waits for its data.
    assert!(read_packet(&[0, 0x10, 0, 0, b'b']).unwrap().is_none());
}

#[test]
fn malformed_replies_are_protocol_errors() {
    let cases: &[(&[u8], &str)] = &[
        (b"\0\0\0\x01Z", "unknown reply 'Z'"),
        (b"\0\0\0\x01\x01", "unknown reply 0x01"),
        (b"\0\0\0\x02cX", "reply 'c' followed by 1 unexpected octets"),
        (
            b"\0\0\0\x04y550",
            "reply 'y' too short: no NUL-terminated string",
        ),
        (
            b"\0\0\0\x04h\xff\0\0",
            "reply 'h' holds a string that is not UTF-8",
        ),
        (
            b"\0\0\0\x04hX\0Y",
            "reply 'h' too short: no NUL-terminated string",
        ),
        (b"\0\0\0\x03i\0\0", "reply 'i' too short: no integer"),
        (
            b"\0\0\0\x09O\0\0\0\x06\0\0\0\x01",
            "reply 'O' too short: no integer",
        ),
        (
            b"\0\0\0\x11O\0\0\0\x06\0\0\0\x01\0\0\0\0\0\0\0\x01",
            "reply 'O' too short: no NUL-terminated string",
        ),
        (
            b"\0\0\0\x06e<>\0\0x",
            "reply 'e' followed by 1 unexpected octets",
        ),
    ];
    for (bytes, want) in cases {
        let err = decode_one(bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("protocol error: {want}"),
            "{bytes:?}"
        );
    }
}

#[test]
fn commands_encode_as_libmilter_expects() {
    let b = encode_command(&Command::OptNeg {
        version: 6,
        actions: 0x1ff,
        protocol: 0x1f_ffff,
    });
    assert_eq!(b, b"\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff");
    let b = encode_command(&Command::Connect {
        hostname: "mail.example.org",
        addr: Some(("192.0.2.1".parse().unwrap(), 25)),
    });
    assert_eq!(&b[4..], b"Cmail.example.org\x004\x00\x19192.0.2.1\0");
    let b = encode_command(&Command::Connect {
        hostname: "[2001:db8::1]",
        addr: Some(("2001:db8::1".parse().unwrap(), 587)),
    });
    assert_eq!(&b[4..], b"C[2001:db8::1]\x006\x02\x4b2001:db8::1\0");
    let b = encode_command(&Command::Connect {
        hostname: "localhost",
        addr: None,
    });
    assert_eq!(&b[4..], b"Clocalhost\0U");
    let args = vec!["<a@example.org>".to_string(), "SIZE=10".to_string()];
    assert_eq!(
        &encode_command(&Command::Mail(&args))[4..],
        b"M<a@example.org>\0SIZE=10\0"
    );
    assert_eq!(
        &encode_command(&Command::Rcpt(&args[..1]))[4..],
        b"R<a@example.org>\0"
    );
    let b = encode_command(&Command::Macro {
        cmd: b'C',
        pairs: vec![("j", "mx"), ("{client_addr}", "192.0.2.1")],
    });
    assert_eq!(&b[4..], b"DCj\0mx\0{client_addr}\x00192.0.2.1\0");
    assert_eq!(&encode_command(&Command::Helo("a\0b"))[4..], b"Hab\0");
    let b = encode_command(&Command::Header {
        name: "Subject",
        value: b"hi",
    });
    assert_eq!(b, b"\0\0\0\x0cLSubject\0hi\0");
    assert_eq!(
        encode_command(&Command::Body(b"x\r\n")),
        b"\0\0\0\x04Bx\r\n"
    );
    for (c, octet) in [
        (Command::Data, b'T'),
        (Command::Eoh, b'N'),
        (Command::BodyEob, b'E'),
        (Command::Abort, b'A'),
        (Command::Quit, b'Q'),
        (Command::QuitNc, b'K'),
    ] {
        assert_eq!(encode_command(&c), vec![0, 0, 0, 1, octet]);
    }
}

#[test]
fn unknown_command_and_packets_appended_to_one_buffer() {
    assert_eq!(
        encode_command(&Command::Unknown("QUIT")),
        b"\0\0\0\x06UQUIT\0"
    );
    // Several packets in one buffer: each framed as if alone.
    let mut out = Vec::new();
    let pairs = vec![("i", "Q1")];
    encode_command_into(&Command::Macro { cmd: b'M', pairs }, &mut out);
    let args = vec!["<a@b>".to_string()];
    encode_command_into(&Command::Mail(&args), &mut out);
    let mut want = encode_command(&Command::Macro {
        cmd: b'M',
        pairs: vec![("i", "Q1")],
    });
    want.extend_from_slice(&encode_command(&Command::Mail(&args)));
    assert_eq!(out, want);
}
