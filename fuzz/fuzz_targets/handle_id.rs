//! Fuzzes `HandleId::parse`: a handle id comes from the agent's state store, so any bytes may
//! arrive. Parsing must never panic, and whatever it accepts must be valid and survive a
//! write/read cycle unchanged, or a reattach after an agent restart would see a different task.
#![no_main]

use execdriver_core::HandleId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Lossy rather than skipping invalid UTF-8: the replacement characters still reach the
    // JSON parser and the field checks, so no input is wasted.
    let text = String::from_utf8_lossy(data);
    let parsed = HandleId::parse(&text);
    assert_eq!(
        text.parse::<HandleId>(),
        parsed,
        "FromStr must agree with parse"
    );
    let handle = match parsed {
        Ok(handle) => handle,
        Err(e) => {
            // Error messages are built from the input; building them must not panic either.
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert_eq!(
        handle.validate(),
        Ok(()),
        "parse accepted an invalid handle"
    );
    let written = handle.to_string();
    let reparsed = HandleId::parse(&written);
    assert_eq!(
        reparsed.as_ref(),
        Ok(&handle),
        "handle id does not round-trip through {written:?}"
    );
    if let Ok(again) = reparsed {
        assert_eq!(again.to_string(), written, "to_string is not stable");
    }
});
