//! Fuzz target: the policy delegation reply parser (`sloop_hooks::policy::parse_reply`)
//! and its incremental reader (`ReplyReader`), which read what a policy service (a
//! daemon that may misbehave) answers.
//! Input: the first octet picks the piece size the reader is fed in; the rest is the
//! service's bytes.
//! Properties: never panics; the reader fed in pieces agrees with `parse_reply` on the
//! whole (the same action or error when the input ends where the reader completes;
//! data after that end refused as such; the same refusal of an over-long input); an
//! action that parses is written again by `encode_reply`
//! as one `action=` line and the empty line, within the size limit, that parses to
//! the same action.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sloop_hooks::policy::{encode_reply, parse_reply, ProtoError, ReplyReader, MAX_REPLY};

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let whole = parse_reply(bytes);
    if let Err(e) = &whole {
        assert!(!e.to_string().is_empty());
    }

    let size = usize::from(first % 32) + 1;
    let mut reader = ReplyReader::new();
    let mut fed = Ok(false);
    let mut consumed = 0;
    for piece in bytes.chunks(size) {
        fed = reader.feed(piece);
        consumed += piece.len();
        if fed != Ok(false) {
            break;
        }
    }
    match fed {
        // Complete at the end of a piece: the same verdict as on the whole when the
        // input ends there; otherwise the rest is data after the end.
        Ok(true) if consumed == bytes.len() => {
            assert_eq!(reader.action(), whole, "reader and parse_reply disagree");
        }
        Ok(true) => {
            assert_eq!(whole, Err(ProtoError::TrailingData));
            assert_eq!(
                reader.feed(&bytes[consumed..]),
                Err(ProtoError::TrailingData)
            );
        }
        Ok(false) => assert_eq!(whole, Err(ProtoError::Incomplete), "reader wants more"),
        Err(e @ (ProtoError::TooLong | ProtoError::TrailingData)) => {
            assert_eq!(whole, Err(e), "reader and parse_reply refuse differently");
        }
        Err(e) => panic!("reader returned a content error: {e}"),
    }

    if let Ok(action) = whole {
        let out = encode_reply(&action);
        // Only a one-digit OK grows ("5" is written "OK"); nothing passes the limit.
        assert!(out.len() <= MAX_REPLY, "re-encoded reply too long");
        assert!(out.starts_with(b"action=") && out.ends_with(b"\n\n"));
        assert_eq!(
            out.iter().filter(|&&b| b == b'\n').count(),
            2,
            "not one line"
        );
        // A CR may stay in a text (the engine cleans texts before they reach a client).
        assert!(!out.contains(&0));
        assert_eq!(parse_reply(&out), Ok(action), "action does not round-trip");
    }
});
