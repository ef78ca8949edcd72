//! Properties of `HandleId`: exact round trips of every valid handle, and a parser that never
//! panics and never accepts what it cannot round-trip, whatever it is given.

#[allow(dead_code)]
mod support;

use std::path::PathBuf;

use execdriver_core::handle::{HANDLE_FORMAT_VERSION, MAX_HANDLE_LEN};
use execdriver_core::{HandleError, HandleId, ProcessIdentity, Signal, SupervisorIdentity};
use proptest::prelude::*;
use serde_json::Value;

/// An absolute path without `..` or NUL, with arbitrary unicode, quotes, backslashes, control
/// characters, `.` and empty components (`//`): all of it must survive the JSON round trip.
fn plain_absolute_path() -> impl Strategy<Value = PathBuf> {
    let component = "[^/\\x00]{0,12}".prop_filter("no parent dir", |c| c != "..");
    (prop::collection::vec(component, 0..6), any::<bool>()).prop_map(|(parts, trailing)| {
        let mut s = format!("/{}", parts.join("/"));
        if trailing && !s.ends_with('/') {
            s.push('/');
        }
        PathBuf::from(s)
    })
}

fn task_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9._-]{0,63}"
}

fn cgroup_name() -> impl Strategy<Value = String> {
    // At most 60 characters of at most 4 bytes: within the 255-byte NAME_MAX.
    "[^/\\x00\\n]{1,60}".prop_filter("not . or ..", |c| c != "." && c != "..")
}

fn process() -> impl Strategy<Value = ProcessIdentity> {
    (2..=i32::MAX, any::<u64>()).prop_map(|(pid, start_time)| ProcessIdentity { pid, start_time })
}

fn signal() -> impl Strategy<Value = Signal> {
    (1..=64i32).prop_map(|n| Signal::new(n).expect("in range"))
}

/// Every handle `validate` accepts, spread over the whole range of each field.
fn valid_handle() -> impl Strategy<Value = HandleId> {
    let timeouts = (any::<u64>(), any::<u64>()).prop_map(|(a, b)| (a.min(b), a.max(b)));
    (
        ("\\PC{1,16}", task_id(), process(), plain_absolute_path()),
        (process(), cgroup_name(), plain_absolute_path()),
        (
            plain_absolute_path(),
            plain_absolute_path(),
            timeouts,
            signal(),
        ),
    )
        .prop_map(
            |(
                (driver_version, task_id, sup, socket),
                (task, cgroup, state_dir),
                (task_dir, alloc_dir, (kill, max), kill_signal),
            )| HandleId {
                format: HANDLE_FORMAT_VERSION,
                driver_version,
                task_id,
                supervisor: SupervisorIdentity {
                    process: sup,
                    socket,
                },
                task,
                cgroup,
                state_dir,
                task_dir,
                alloc_dir,
                kill_timeout_ms: kill,
                max_kill_timeout_ms: max,
                kill_signal,
            },
        )
}

/// Arbitrary JSON, nested a little.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_.]{0,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What any successful parse must satisfy: the value is valid and round-trips exactly.
fn check_accepted(text: &str) -> Result<(), TestCaseError> {
    if let Ok(h) = HandleId::parse(text) {
        prop_assert_eq!(h.validate(), Ok(()));
        let again = h.to_string();
        prop_assert_eq!(HandleId::parse(&again), Ok(h));
        prop_assert!(again.len() <= MAX_HANDLE_LEN);
    }
    Ok(())
}

const FIELDS: [&str; 12] = [
    "format",
    "driver_version",
    "task_id",
    "supervisor",
    "task",
    "cgroup",
    "state_dir",
    "task_dir",
    "alloc_dir",
    "kill_timeout_ms",
    "max_kill_timeout_ms",
    "kill_signal",
];

proptest! {
    // 512 cases: the central property; each field's range is covered many times over.
    #![proptest_config(proptest_config!(512, "handle_props.txt"))]

    #[test]
    fn every_valid_handle_round_trips_exactly(h in valid_handle()) {
        prop_assert_eq!(h.validate(), Ok(()));
        let text = h.to_string();
        prop_assert!(text.len() <= MAX_HANDLE_LEN);
        let parsed = HandleId::parse(&text);
        prop_assert_eq!(parsed.as_ref(), Ok(&h));
        prop_assert_eq!(parsed.map(|p| p.to_string()), Ok(text.clone()));
        prop_assert_eq!(text.parse::<HandleId>(), Ok(h));
    }
}

proptest! {
    // 256 cases each: variations on valid handles, whose generation dominates the run time.
    #![proptest_config(proptest_config!(256, "handle_props.txt"))]

    #[test]
    fn pretty_printed_and_reordered_handles_parse_the_same(h in valid_handle()) {
        let pretty = serde_json::to_string_pretty(&h).expect("serialize");
        prop_assert_eq!(HandleId::parse(&pretty), Ok(h.clone()));
        let mut v = serde_json::to_value(&h).expect("value");
        let obj = v.as_object_mut().expect("object");
        let mut entries: Vec<(String, Value)> = std::mem::take(obj).into_iter().collect();
        entries.reverse();
        let reordered: serde_json::Map<String, Value> = entries.into_iter().collect();
        prop_assert_eq!(HandleId::parse(&Value::Object(reordered).to_string()), Ok(h));
    }

    #[test]
    fn forged_fields_are_refused_by_name(h in valid_handle(), which in 0..6usize, bad_pid in i32::MIN..=1) {
        let mut forged = h.clone();
        let field = match which {
            0 => { forged.task.pid = bad_pid; "task.pid" }
            1 => { forged.supervisor.process.pid = bad_pid; "supervisor.process.pid" }
            2 => { forged.state_dir = PathBuf::from("relative/state"); "state_dir" }
            3 => { forged.task_dir = forged.task_dir.join("..").join("etc"); "task_dir" }
            4 => { forged.cgroup = format!("../{}", forged.cgroup); "cgroup" }
            _ => {
                prop_assume!(forged.max_kill_timeout_ms < u64::MAX);
                forged.kill_timeout_ms = forged.max_kill_timeout_ms + 1;
                "kill_timeout_ms"
            }
        };
        let text = serde_json::to_string(&forged).expect("serialize");
        let err = HandleId::parse(&text).expect_err("forged handle accepted");
        prop_assert!(err.to_string().contains(field), "{} should name {}", err, field);
    }

    #[test]
    fn one_field_replaced_by_arbitrary_json(h in valid_handle(), field in 0..FIELDS.len(), v in json()) {
        let mut value = serde_json::to_value(&h).expect("value");
        value[FIELDS[field]] = v;
        check_accepted(&value.to_string())?;
    }

    #[test]
    fn a_missing_or_unknown_field_is_refused(h in valid_handle(), field in 0..FIELDS.len(), extra in "[a-z_]{1,12}", v in json()) {
        let mut value = serde_json::to_value(&h).expect("value");
        let obj = value.as_object_mut().expect("object");
        obj.remove(FIELDS[field]);
        prop_assert!(HandleId::parse(&value.to_string()).is_err(), "accepted without {}", FIELDS[field]);
        prop_assume!(!FIELDS.contains(&extra.as_str()));
        let mut value = serde_json::to_value(&h).expect("value");
        value[extra.as_str()] = v;
        let err = HandleId::parse(&value.to_string()).expect_err("unknown field accepted");
        prop_assert!(err.to_string().contains(&extra), "{} should name {}", err, extra);
    }

}

proptest! {
    // 1000 cases for arbitrary strings (each case is one parse of a short string), 512 for
    // arbitrary JSON and mangled handles, whose generation costs more.
    #![proptest_config(proptest_config!(1000, "handle_props.txt"))]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        check_accepted(&s)?;
    }

    #[test]
    fn oversized_input_is_refused_before_parsing(s in ".{0,8}") {
        let text = format!("{s}{}", " ".repeat(MAX_HANDLE_LEN + 1 - s.len().min(MAX_HANDLE_LEN)));
        prop_assert!(text.len() > MAX_HANDLE_LEN);
        let too_large = matches!(HandleId::parse(&text), Err(HandleError::TooLarge { .. }));
        prop_assert!(too_large);
    }
}

proptest! {
    // See above: 512 cases each.
    #![proptest_config(proptest_config!(512, "handle_props.txt"))]

    #[test]
    fn arbitrary_json_never_panics(v in json()) {
        check_accepted(&v.to_string())?;
    }

    #[test]
    fn mangled_text_never_panics(h in valid_handle(), cut in any::<prop::sample::Index>(), insert in any::<char>(), at in any::<prop::sample::Index>()) {
        let text = h.to_string();
        let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
        let truncated = &text[..*cut.get(&boundaries)];
        check_accepted(truncated)?;
        let mut inserted = text.clone();
        inserted.insert(*at.get(&boundaries), insert);
        check_accepted(&inserted)?;
    }
}
