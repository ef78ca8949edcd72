//! Replays the committed fuzz seed corpora on stable, so that every `cargo test` checks the
//! same properties the fuzz targets check, on the inputs we chose by hand: parsing never
//! panics, and what parses round-trips exactly.

use std::path::PathBuf;

use execdriver_core::{HandleId, TaskConfig};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let bytes = std::fs::read(&path).expect("corpus file");
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "empty corpus {}", dir.display());
    inputs
}

#[test]
fn handle_id_seeds_parse_without_panic_and_round_trip() {
    let mut accepted = 0;
    for (path, bytes) in corpus("handle_id") {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(handle) = HandleId::parse(&text) {
            accepted += 1;
            let again = handle.to_string();
            assert_eq!(
                HandleId::parse(&again).as_ref(),
                Ok(&handle),
                "{}",
                path.display()
            );
            assert_eq!(HandleId::parse(&again).map(|h| h.to_string()), Ok(again));
        }
    }
    assert!(accepted > 0, "the corpus holds no valid handle id");
}

#[test]
fn task_config_seeds_decode_without_panic_and_round_trip() {
    let mut accepted = 0;
    for (path, bytes) in corpus("task_config") {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(config) = TaskConfig::from_json_str(&text) {
            accepted += 1;
            assert_eq!(config.validate(), Ok(()), "{}", path.display());
            let json = serde_json::to_string(&config).expect("serialize");
            assert_eq!(
                TaskConfig::from_json_str(&json),
                Ok(config),
                "{}",
                path.display()
            );
        }
    }
    assert!(accepted > 0, "the corpus holds no valid task config");
}
