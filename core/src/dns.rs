//! [`DnsConfig`]: the task's own resolver settings, written as the `/etc/resolv.conf` it sees.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Longest search domain accepted (a DNS name's limit).
const MAX_SEARCH_LEN: usize = 253;
/// Longest resolver option accepted (`ndots:N`, `timeout:N`, `edns0`... are all short).
const MAX_OPTION_LEN: usize = 64;
/// Most entries of each kind: far above what a resolver uses, it bounds the file.
const MAX_ENTRIES: usize = 32;

/// A dns setting that cannot be written into a resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dns {field} {value:?} is not usable: {why}")]
pub struct DnsError {
    /// `servers`, `searches` or `options`.
    pub field: &'static str,
    /// The entry as given.
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Resolver settings for the task, as Nomad's `dns` block: its `/etc/resolv.conf` has these
/// and nothing of the host's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Name server addresses, IPv4 or IPv6, in order.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(default)]
    pub searches: Vec<String>,
    /// Resolver options (`ndots:2`, `edns0`).
    #[serde(default)]
    pub options: Vec<String>,
}

impl DnsConfig {
    /// Refuses what is not an address, or what would break a resolv.conf line.
    pub fn validate(&self) -> Result<(), DnsError> {
        let bad = |field, value: &str, why| DnsError {
            field,
            value: value.to_owned(),
            why,
        };
        for (field, list) in [
            ("servers", &self.servers),
            ("searches", &self.searches),
            ("options", &self.options),
        ] {
            if list.len() > MAX_ENTRIES {
                return Err(bad(field, &list.len().to_string(), "at most 32 entries"));
            }
        }
        for server in &self.servers {
            if server.parse::<IpAddr>().is_err() {
                return Err(bad(
                    "servers",
                    server,
                    "use an IPv4 or IPv6 address such as 10.0.0.2",
                ));
            }
        }
        for (field, list, max) in [
            ("searches", &self.searches, MAX_SEARCH_LEN),
            ("options", &self.options, MAX_OPTION_LEN),
        ] {
            for entry in list {
                if entry.is_empty() || entry.len() > max {
                    return Err(bad(field, entry, "it must be 1 to 253 (options: 64) bytes"));
                }
                if entry
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '#' || c == ';')
                {
                    return Err(bad(
                        field,
                        entry,
                        "it may not contain whitespace, control characters, `#` or `;`",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether it sets nothing at all (Nomad sends an empty block for "the host's").
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.searches.is_empty() && self.options.is_empty()
    }

    /// The resolv.conf text: a `nameserver` line per server, then `search`, then `options`.
    pub fn resolv_conf(&self) -> String {
        let mut text = String::from("# written by execdriver from the task's dns settings\n");
        for server in &self.servers {
            text.push_str(&format!("nameserver {server}\n"));
        }
        if !self.searches.is_empty() {
            text.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            text.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(servers: &[&str], searches: &[&str], options: &[&str]) -> DnsConfig {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        DnsConfig {
            servers: owned(servers),
            searches: owned(searches),
            options: owned(options),
        }
    }

    #[test]
    fn a_resolv_conf_is_written_in_order() {
        let d = dns(
            &["10.0.0.2", "fd00::1"],
            &["svc.local", "local"],
            &["ndots:2", "edns0"],
        );
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(
            d.resolv_conf(),
            "# written by execdriver from the task's dns settings\nnameserver 10.0.0.2\n\
             nameserver fd00::1\nsearch svc.local local\noptions ndots:2 edns0\n"
        );
        assert!(DnsConfig::default().is_empty());
        assert!(!d.is_empty());
    }

    #[test]
    fn bad_entries_are_named() {
        for (d, needle) in [
            (dns(&["dns.google"], &[], &[]), "servers \"dns.google\""),
            (dns(&["1.1.1.1 8.8.8.8"], &[], &[]), "IPv4 or IPv6"),
            (dns(&[], &["a b"], &[]), "searches \"a b\""),
            (dns(&[], &[""], &[]), "searches \"\""),
            (dns(&[], &[], &["ndots:1\nnameserver 6.6.6.6"]), "options"),
            (dns(&[], &[], &[&"x".repeat(65)]), "options"),
        ] {
            let err = d.validate().expect_err(needle);
            assert!(err.to_string().contains(needle), "{err}");
        }
        let many = dns(&vec!["1.1.1.1"; 33], &[], &[]);
        assert!(many.validate().is_err());
    }
}
