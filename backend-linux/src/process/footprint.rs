//! A long-lived process's share of clean file pages, given back once its start is done.
//!
//! The supervisor (and the task's init, until it execs the reaper or where it cannot) runs
//! from the whole `execdriver` binary, and their
//! start (argument parsing, the spec, the seccomp compiler, the root plan) faults in far more
//! of its code and read-only data than the years of waiting that follow ever touch. Those
//! pages are clean copies of the file: `MADV_DONTNEED` unmaps them from this process (the
//! page cache keeps them for the next start), and whatever is executed again faults back in
//! from the same file. Only mappings that are not writable and hold no private (copied on
//! write, e.g. relocated RELRO) page are given back, so no byte of this process's state is
//! lost; anonymous memory is never touched.
//!
//! What faults back in is not a page but the kernel's fault-around window (64 KiB) around
//! it, so the waiting code's footprint is the number of windows it touches. The functions
//! that run from the release until the poll blocks (here, in the supervisor's event loop and
//! in the init) are therefore put together in one section, `.text.hot.execdriver_idle`,
//! which the binaries' link (`build.rs`, `-z keep-text-section-prefix`) keeps as one output
//! section instead of scattering it through `.text`.

use std::io::{BufRead, BufReader};

/// How many mappings are remembered at most (the binary and its libraries have some ten).
const MAX_MAPPINGS: usize = 64;

/// Address ranges `[start, end)` of clean, read-only file mappings of this process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CleanMappings {
    ranges: [(usize, usize); MAX_MAPPINGS],
    len: usize,
    /// Where the heap (`[heap]`, the brk area) starts; 0 when there is none.
    heap_start: usize,
}

impl CleanMappings {
    /// The clean read-only file mappings of this process (none if `/proc/self/smaps`
    /// cannot be read: then nothing is given back). Read once: the supervisor asks before
    /// the init's clone and again after its start, and walking smaps is not free.
    pub(crate) fn of_self() -> Self {
        static FOUND: std::sync::OnceLock<CleanMappings> = std::sync::OnceLock::new();
        *FOUND.get_or_init(Self::read)
    }

    fn read() -> Self {
        let mut found = Self {
            ranges: [(0, 0); MAX_MAPPINGS],
            len: 0,
            heap_start: 0,
        };
        let Ok(file) = std::fs::File::open("/proc/self/smaps") else {
            return found;
        };
        // The mapping being read: its range, if it qualifies so far.
        let mut current: Option<(usize, usize)> = None;
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            if let Some(range) = mapping_header(&line) {
                current = range;
                if line.ends_with("[heap]") {
                    found.heap_start = heap_start(&line).unwrap_or(0);
                }
            } else if let Some(kb) = line.strip_prefix("Anonymous:") {
                // The last field of a mapping that matters here; a private page excludes it.
                let anonymous = kb.trim().trim_end_matches("kB").trim() != "0";
                if let (Some(range), false) = (current.take(), anonymous)
                    && found.len < MAX_MAPPINGS
                {
                    found.ranges[found.len] = range;
                    found.len += 1;
                }
            }
        }
        found
    }

    /// Unmaps those pages from this process. Only system calls: safe in a forked child.
    #[unsafe(link_section = ".text.hot.execdriver_idle")]
    pub(crate) fn release(&self) {
        for &(start, end) in &self.ranges[..self.len] {
            // SAFETY: the range is a private, read-only file mapping without private pages,
            // found in our own maps; dropping its pages loses nothing (they fault back in
            // from the file), and a failure leaves them mapped.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
}

impl CleanMappings {
    /// Gives back every page of the heap, free or not: for a process that never touches its
    /// heap again, what it holds is dead weight. The task's init is one: a copy of the
    /// supervisor made by a clone, whose heap pages turn into the init's own as soon as the
    /// supervisor writes its copies, while the init, once the task runs, only waits and
    /// reaps with system calls on its stack. Only system calls: safe in a forked child.
    ///
    /// # Safety
    /// Nothing in this process may read, write, allocate or free heap memory afterwards: the
    /// heap reads back as zeros.
    #[unsafe(link_section = ".text.hot.execdriver_idle")]
    pub(crate) unsafe fn discard_heap(&self) {
        if self.heap_start == 0 {
            return;
        }
        // SAFETY: sbrk(0) only reads the current break.
        let end = unsafe { libc::sbrk(0) } as usize;
        if end == usize::MAX || end <= self.heap_start {
            return;
        }
        // SAFETY: [heap_start, end) is this process's brk heap, which the caller promises is
        // never used again; a failure leaves it as it was.
        unsafe {
            libc::madvise(
                self.heap_start as *mut libc::c_void,
                end - self.heap_start,
                libc::MADV_DONTNEED,
            );
        }
    }
}

/// The start address of a `/proc/self/smaps` header line's mapping.
fn heap_start(line: &str) -> Option<usize> {
    let (start, _) = line.split_ascii_whitespace().next()?.split_once('-')?;
    usize::from_str_radix(start, 16).ok()
}

/// Gives the heap's free pages back to the kernel (glibc keeps them otherwise): before the
/// init's clone, so that the init does not start with copies of the start's garbage, and in
/// the supervisor once its start is done.
#[unsafe(link_section = ".text.hot.execdriver_idle")]
pub(crate) fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory that no allocation holds.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// For a header line of `/proc/self/smaps` (`start-end perms offset dev inode path`): the
/// range when the mapping is a private, non-writable mapping of a file; `None` inside for
/// any other mapping; outer `None` when the line is not a header.
fn mapping_header(line: &str) -> Option<Option<(usize, usize)>> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?.as_bytes();
    if perms.len() != 4 {
        return None;
    }
    let path = fields.nth(3);
    let clean = perms[1] == b'-' && perms[3] == b'p' && path.is_some_and(|p| p.starts_with('/'));
    Some(clean.then_some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_read_only_file_mappings_qualify() {
        let text = "55d0c0a00000-55d0c0b00000 r-xp 00001000 08:01 1234 /usr/bin/execdriver";
        assert_eq!(mapping_header(text), Some(Some((0x55d0c0a00000, 0x55d0c0b00000))));
        for other in [
            "55d0c0a00000-55d0c0b00000 rw-p 00001000 08:01 1234 /usr/bin/execdriver",
            "55d0c0a00000-55d0c0b00000 r--s 00000000 08:01 1234 /dev/shm/x",
            "7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0 [stack]",
            "7ffd1c000000-7ffd1c021000 r-xp 00000000 00:00 0 [vdso]",
            "7f0000000000-7f0000001000 r--p 00000000 00:00 0",
        ] {
            assert_eq!(mapping_header(other), Some(None), "{other}");
        }
        assert_eq!(mapping_header("Anonymous:        0 kB"), None);
        assert_eq!(mapping_header("VmFlags: rd ex mr mw me"), None);
    }

    #[test]
    fn the_heap_is_found_by_its_header() {
        let line = "55d0c1a00000-55d0c1b21000 rw-p 00000000 00:00 0                          [heap]";
        assert_eq!(heap_start(line), Some(0x55d0c1a00000));
        assert_eq!(heap_start("not a header"), None);
    }

    #[test]
    fn releasing_own_clean_mappings_keeps_the_process_working() {
        let clean = CleanMappings::of_self();
        assert!(clean.len > 0, "the test binary's own text is a clean mapping");
        clean.release();
        // Code and read-only data fault back in from the file.
        let words: Vec<String> = "still running".split(' ').map(str::to_owned).collect();
        assert_eq!(words.join(" "), "still running");
    }
}
