//! The binaries keep the supervisor's and the init's waiting code in one output section,
//! `.text.hot` (see `src/process/footprint.rs` and `build.rs`): what a waiting supervisor
//! maps of its binary is then a window or two of it instead of one window per function.

use std::path::Path;

/// The size of the ELF64 section named `wanted` in the file at `path`, if there is one.
fn section_size(path: &Path, wanted: &str) -> Option<u64> {
    let elf = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().expect("8 bytes"));
    assert_eq!(
        &elf[..5],
        b"\x7fELF\x02",
        "{} is not a 64-bit ELF",
        path.display()
    );
    let shoff = usize::try_from(u64_at(0x28)).expect("offset");
    let (shentsize, shnum, shstrndx) = (u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| shoff + i * shentsize;
    let names = usize::try_from(u64_at(header(shstrndx) + 0x18)).expect("offset");
    (0..shnum).find_map(|i| {
        let name_at = names + u32_at(header(i)) as usize;
        let end = elf[name_at..].iter().position(|b| *b == 0)?;
        (elf[name_at..name_at + end] == *wanted.as_bytes()).then(|| u64_at(header(i) + 0x20))
    })
}

#[test]
fn the_waiting_code_is_one_section_no_larger_than_a_fault_around_window() {
    for binary in [
        env!("CARGO_BIN_EXE_execdriver-supervisor"),
        env!("CARGO_BIN_EXE_execdriver"),
    ] {
        let size = section_size(Path::new(binary), ".text.hot")
            .unwrap_or_else(|| panic!("{binary} has no .text.hot: is build.rs's link arg gone?"));
        assert!(
            size > 0 && size <= 64 * 1024,
            "{binary}: .text.hot is {size} bytes"
        );
    }
}
