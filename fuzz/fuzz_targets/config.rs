//! Fuzz target: the config loader (`sloop_common::Config::parse`) on arbitrary UTF-8
//! text, as an administrator's typo or a half-written file would give it.
//! Properties: never panics; an error has a non-empty message and every issue names a
//! key; a config that loads renders (`render_effective`, what `sloop config check
//! --show` prints) to TOML that loads again to the same effective values and filter
//! hooks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sloop_common::config::ConfigError;
use sloop_common::Config;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/fuzz.toml");
    match Config::parse(file, text) {
        Ok(cfg) => {
            let shown = cfg.render_effective();
            match Config::parse(file, &shown) {
                Ok(again) => {
                    assert_eq!(
                        again.effective, cfg.effective,
                        "effective config does not round-trip:\n{shown}"
                    );
                    assert_eq!(
                        again.hooks, cfg.hooks,
                        "[[policy]]/[[milter]]/[access] do not round-trip:\n{shown}"
                    );
                }
                Err(e) => panic!("rendered effective config does not load: {e}\n{shown}"),
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty(), "empty error message");
            if let ConfigError::Invalid(issues) = &e {
                assert!(!issues.is_empty(), "Invalid with no issue");
                for i in issues {
                    assert!(!i.key.is_empty(), "issue without a key: {i:?}");
                }
            }
        }
    }
});
