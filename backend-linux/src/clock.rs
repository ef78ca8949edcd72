//! The wall clock, for the times that are shown to people and stored beside data.

/// Now, as unix nanoseconds (0 before 1970).
pub(crate) fn unix_nanos_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
