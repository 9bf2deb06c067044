//! Fuzz target: the aliases(5) parser (`sloop_common::aliases::Aliases::parse`) on
//! arbitrary UTF-8 text. The smtpd and `sloop-deliver local` both load this file.
//! Properties: never panics; every issue has a line number >= 1 and a message; a
//! table that loads has only non-empty, lower-case names, each with at least one
//! target, found again by `get`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sloop_common::aliases::{AliasError, Aliases};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Aliases::parse(text, Path::new("/fuzz/aliases")) {
        Ok(table) => check_table(&table),
        Err(AliasError::Invalid(issues)) => {
            assert!(!issues.is_empty(), "Invalid with no issue");
            let lines = text.lines().count().max(1);
            for i in &issues {
                assert!(i.line >= 1, "issue on line 0: {i:?}");
                assert!(i.line <= lines, "issue past the last line: {i:?}");
                assert!(!i.message.is_empty(), "issue without message: {i:?}");
            }
        }
        Err(e @ AliasError::Read { .. }) => panic!("parse cannot fail to read: {e}"),
    }
});

fn check_table(table: &Aliases) {
    for name in table.names() {
        assert!(!name.is_empty(), "empty alias name");
        assert_eq!(
            name,
            name.to_lowercase().as_str(),
            "alias name not lower case"
        );
        let targets = table.get(name).expect("listed name is found");
        assert!(!targets.is_empty(), "alias {name:?} without target");
    }
}
