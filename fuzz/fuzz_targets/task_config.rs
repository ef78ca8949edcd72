//! Fuzzes `TaskConfig::from_json_str`: job files are written by hand, so the weak decoding sees
//! any text. It must never panic, and what it accepts must be valid and come back unchanged
//! from its own serialized form, through both the weak decoder and the strict serde one.
#![no_main]

use execdriver_core::TaskConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let config = match TaskConfig::from_json_str(&text) {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert_eq!(config.validate(), Ok(()), "decoded an invalid config");
    let json = match serde_json::to_string(&config) {
        Ok(json) => json,
        Err(e) => panic!("cannot serialize {config:?}: {e}"),
    };
    assert_eq!(
        TaskConfig::from_json_str(&json).as_ref(),
        Ok(&config),
        "weak decode of {json:?}"
    );
    match serde_json::from_str::<TaskConfig>(&json) {
        Ok(strict) => assert_eq!(strict, config, "strict decode of {json:?}"),
        Err(e) => panic!("strict decode of {json:?} failed: {e}"),
    }
});
