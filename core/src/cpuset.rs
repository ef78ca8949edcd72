//! [`CpuList`]: a set of cpus in the kernel's list format (`0-2,4`), as `cpuset.cpus` takes
//! and gives it back.
//!
//! The text is parsed into a set and written out again in the kernel's canonical form
//! (ascending, ranges merged), so that what the driver writes is what the kernel reads back.

use std::collections::BTreeSet;
use std::fmt;

/// The highest cpu number accepted (the kernel's `NR_CPUS` limit is 8192).
pub const MAX_CPU: u32 = 8191;

/// A cpu list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cpuset {text:?} is not usable: {why} (use the kernel's list format, such as 0-2,4)")]
pub struct CpuListError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

/// A non-empty set of cpu numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CpuList(BTreeSet<u32>);

impl CpuList {
    /// Parses the kernel's list format: comma-separated cpu numbers and `a-b` ranges.
    pub fn parse(text: &str) -> Result<Self, CpuListError> {
        let bad = |why: String| CpuListError {
            text: text.to_owned(),
            why,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let number = |s: &str| -> Result<u32, CpuListError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("{s:?} is not a cpu number")));
            }
            match s.parse::<u32>() {
                Ok(n) if n <= MAX_CPU => Ok(n),
                _ => Err(bad(format!(
                    "cpu {s} is above the highest possible, {MAX_CPU}"
                ))),
            }
        };
        let mut cpus = BTreeSet::new();
        for item in trimmed.split(',') {
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (number(a)?, number(b)?);
                    if a > b {
                        return Err(bad(format!("range {item} runs backwards")));
                    }
                    cpus.extend(a..=b);
                }
                None => {
                    cpus.insert(number(item)?);
                }
            }
        }
        Ok(Self(cpus))
    }

    /// The cpus, ascending.
    pub fn cpus(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// The cpus of this list that `allowed` does not hold, `None` when it holds them all.
    pub fn outside(&self, allowed: &CpuList) -> Option<CpuList> {
        let rest: BTreeSet<u32> = self.0.difference(&allowed.0).copied().collect();
        (!rest.is_empty()).then_some(Self(rest))
    }
}

impl fmt::Display for CpuList {
    /// The kernel's canonical form: ascending, consecutive cpus as one range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonically() {
        for (text, canonical) in [
            ("0", "0"),
            ("0-2,4", "0-2,4"),
            ("4,0,1,2", "0-2,4"),
            ("1-1", "1"),
            (" 3,2 ", "2-3"),
            ("0-3,2-5,7", "0-5,7"),
        ] {
            assert_eq!(
                CpuList::parse(text).unwrap().to_string(),
                canonical,
                "{text}"
            );
        }
        for bad in [
            "", ",", "a", "1-", "-1", "3-1", "1,,2", "0x1", "9000", "1 2", "+1",
        ] {
            let err = CpuList::parse(bad).unwrap_err();
            assert!(err.to_string().contains("0-2,4"), "{err}");
        }
    }

    #[test]
    fn outside_names_the_missing_cpus() {
        let allowed = CpuList::parse("0-3").unwrap();
        assert_eq!(CpuList::parse("1-2").unwrap().outside(&allowed), None);
        assert_eq!(
            CpuList::parse("2-5,9")
                .unwrap()
                .outside(&allowed)
                .unwrap()
                .to_string(),
            "4-5,9"
        );
    }
}
