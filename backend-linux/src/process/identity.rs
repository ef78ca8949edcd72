//! Reading a process's identity (pid + start time) from `/proc/<pid>/stat`.

use std::io;

use execdriver_core::ProcessIdentity;

use super::ProcessError;

/// The identity of a live (or not yet reaped) process, from `/proc/<pid>/stat`.
pub fn identity(pid: i32) -> Result<ProcessIdentity, ProcessError> {
    if pid <= 0 {
        return Err(ProcessError::InvalidPid { pid });
    }
    let stat = match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        // ESRCH shows up when the process dies between the open and the read.
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return Err(ProcessError::NotFound { pid });
        }
        Err(source) => return Err(ProcessError::ReadStat { pid, source }),
    };
    let start_time =
        parse_start_time(&stat).map_err(|what| ProcessError::ParseStat { pid, what })?;
    Ok(ProcessIdentity { pid, start_time })
}

/// Whether the process `identity` names is gone or dead (a zombie), judged from
/// `/proc/<pid>/stat` alone: the fallback where `pidfd_open` does not exist (before 5.3). A
/// pid now held by a process with another start time means the identified one is gone.
pub fn is_gone_or_dead(identity: &ProcessIdentity) -> Result<bool, ProcessError> {
    let pid = identity.pid;
    if pid <= 0 {
        return Err(ProcessError::InvalidPid { pid });
    }
    let stat = match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return Ok(true);
        }
        Err(source) => return Err(ProcessError::ReadStat { pid, source }),
    };
    let start_time =
        parse_start_time(&stat).map_err(|what| ProcessError::ParseStat { pid, what })?;
    if start_time != identity.start_time {
        return Ok(true);
    }
    Ok(matches!(stat_state(&stat), Some(b'Z' | b'X' | b'x')))
}

/// Field 3 of a `/proc/<pid>/stat` line: the one-letter state.
fn stat_state(stat: &[u8]) -> Option<u8> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat[close + 1..]
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace())
}

/// Field 22 of a `/proc/<pid>/stat` line: the start time in clock ticks since boot.
pub fn parse_start_time(stat: &[u8]) -> Result<u64, &'static str> {
    stat_field(stat, 22)?.ok_or("start time (field 22) is not a number")
}

/// Numeric field `field` (1-based, as in proc(5); 3 or higher) of a `/proc/<pid>/stat`
/// line: `Ok(None)` when it is there but not a number.
///
/// The command name (field 2) is in parentheses and may itself hold spaces and parentheses,
/// so the fields are counted from the LAST `)`, which the kernel always writes.
pub fn stat_field(stat: &[u8], field: usize) -> Result<Option<u64>, &'static str> {
    let close = stat
        .iter()
        .rposition(|&b| b == b')')
        .ok_or("no `)` closing the command name")?;
    let nth = field
        .checked_sub(3)
        .ok_or("fields 1 and 2 are not numbers after the `)`")?;
    let rest = &stat[close + 1..];
    // After the `)` come fields 3 (state) onward.
    let value = rest
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
        .nth(nth)
        .ok_or("fewer fields than asked for")?;
    Ok(std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<u64>().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_from_proc_stat() {
        assert_eq!(stat_state(b"12 (a) b) Z 1 2"), Some(b'Z'));
        let me = identity(i32::try_from(std::process::id()).expect("pid")).expect("own");
        assert!(matches!(is_gone_or_dead(&me), Ok(false)));
        let reused = ProcessIdentity {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(matches!(is_gone_or_dead(&reused), Ok(true)));
        let mut child = std::process::Command::new("/bin/true")
            .spawn()
            .expect("true");
        let id = identity(i32::try_from(child.id()).expect("pid")).expect("child");
        // Not reaped yet: a zombie once it has exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !matches!(is_gone_or_dead(&id), Ok(true)) {
            assert!(std::time::Instant::now() < deadline, "never seen dead");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.wait();
        assert!(matches!(is_gone_or_dead(&id), Ok(true)));
    }

    fn line(comm: &str, start: u64) -> Vec<u8> {
        // 3..=21 are 19 fields, then the start time, then a few more.
        let mut s = format!("4242 ({comm}) S");
        for i in 4..=21 {
            s.push_str(&format!(" {i}"));
        }
        s.push_str(&format!(" {start} 100 200 300\n"));
        s.into_bytes()
    }

    #[test]
    fn start_time_is_field_22() {
        assert_eq!(parse_start_time(&line("sleep", 987_654)), Ok(987_654));
    }

    #[test]
    fn command_names_with_spaces_and_parentheses_do_not_shift_fields() {
        for comm in ["a b", "x) (y", ") 1 2 3 4 5", "((", "))", ""] {
            assert_eq!(parse_start_time(&line(comm, 77)), Ok(77), "comm {comm:?}");
        }
    }

    #[test]
    fn any_numeric_field_counts_from_the_last_parenthesis() {
        let l = line("a) 9 (b", 5);
        assert_eq!(stat_field(&l, 4), Ok(Some(4)));
        assert_eq!(stat_field(&l, 22), Ok(Some(5)));
        assert_eq!(stat_field(&l, 25), Ok(Some(300)));
        assert_eq!(stat_field(&l, 3), Ok(None));
        assert!(stat_field(&l, 26).is_err());
        assert!(stat_field(&l, 2).is_err());
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        assert!(parse_start_time(b"").is_err());
        assert!(parse_start_time(b"12 (x").is_err());
        assert!(parse_start_time(b"12 (x) S 1 2").is_err());
        let mut bad = line("x", 1);
        let text = String::from_utf8(bad.clone()).unwrap_or_default();
        bad = text.replace(" 1 100 ", " nope 100 ").into_bytes();
        assert!(parse_start_time(&bad).is_err());
    }

    #[test]
    fn own_identity_matches_proc() {
        let me = i32::try_from(std::process::id()).expect("pid fits i32");
        let id = identity(me).expect("own identity");
        assert_eq!(id.pid, me);
        assert!(id.start_time > 0);
        assert_eq!(identity(me).expect("again").start_time, id.start_time);
    }

    #[test]
    fn bad_and_missing_pids() {
        assert!(matches!(
            identity(0),
            Err(ProcessError::InvalidPid { pid: 0 })
        ));
        assert!(matches!(identity(-5), Err(ProcessError::InvalidPid { .. })));
        // pid_max is at most 2^22, so this pid cannot exist.
        assert!(matches!(
            identity(i32::MAX),
            Err(ProcessError::NotFound { .. })
        ));
    }
}
