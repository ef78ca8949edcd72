//! Signal numbers, parsed from names without asking the OS.
//!
//! The table is Linux's (x86_64 and aarch64 agree on these); the driver only runs there.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A signal number between 1 and 64, the range Linux delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i32", into = "i32")]
pub struct Signal(i32);

/// A signal name or number that is not a Linux signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal {0:?}: use a name such as SIGTERM, TERM or a number from 1 to 64")]
pub struct SignalError(pub String);

const NAMES: [(&str, i32); 31] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

impl Signal {
    /// Hangup.
    pub const SIGHUP: Signal = Signal(1);
    /// Interrupt: the default kill signal, as in the reference.
    pub const SIGINT: Signal = Signal(2);
    /// Quit.
    pub const SIGQUIT: Signal = Signal(3);
    /// Kill: cannot be caught or ignored.
    pub const SIGKILL: Signal = Signal(9);
    /// User signal 1.
    pub const SIGUSR1: Signal = Signal(10);
    /// User signal 2.
    pub const SIGUSR2: Signal = Signal(12);
    /// Terminate.
    pub const SIGTERM: Signal = Signal(15);
    /// Continue a stopped process.
    pub const SIGCONT: Signal = Signal(18);
    /// Stop, which cannot be caught.
    pub const SIGSTOP: Signal = Signal(19);

    /// The signal with this number, if Linux has one.
    pub fn new(number: i32) -> Result<Self, SignalError> {
        if (1..=64).contains(&number) {
            Ok(Signal(number))
        } else {
            Err(SignalError(number.to_string()))
        }
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// The conventional name (`SIGTERM`), if the signal has one besides its number.
    pub fn name(self) -> Option<&'static str> {
        NAMES
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(name, _)| *name)
    }
}

impl FromStr for Signal {
    type Err = SignalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if let Ok(n) = trimmed.parse::<i32>() {
            return Signal::new(n).map_err(|_| SignalError(s.to_owned()));
        }
        let upper = trimmed.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        NAMES
            .iter()
            .find(|(name, _)| *name == bare)
            .map(|(_, n)| Signal(*n))
            .ok_or_else(|| SignalError(s.to_owned()))
    }
}

impl TryFrom<i32> for Signal {
    type Error = SignalError;

    fn try_from(n: i32) -> Result<Self, Self::Error> {
        Signal::new(n)
    }
}

impl From<Signal> for i32 {
    fn from(s: Signal) -> i32 {
        s.0
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "SIG{name}"),
            None => write!(f, "signal {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!("SIGTERM".parse(), Ok(Signal::SIGTERM));
        assert_eq!("term".parse(), Ok(Signal::SIGTERM));
        assert_eq!("9".parse(), Ok(Signal::SIGKILL));
        assert_eq!(
            "SIGINT".parse::<Signal>().map(|s| s.to_string()),
            Ok("SIGINT".into())
        );
        assert!("SIGNOPE".parse::<Signal>().is_err());
        assert!("0".parse::<Signal>().is_err());
        assert!("65".parse::<Signal>().is_err());
        assert_eq!(
            Signal::new(40).map(|s| s.to_string()),
            Ok("signal 40".into())
        );
    }

    #[test]
    fn serde_refuses_out_of_range() {
        assert!(serde_json::from_str::<Signal>("0").is_err());
        assert_eq!(
            serde_json::from_str::<Signal>("15").ok(),
            Some(Signal::SIGTERM)
        );
    }
}
