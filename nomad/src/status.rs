//! Errors as the gRPC statuses Nomad reads: a retryable failure is `FailedPrecondition` with
//! a `RecoverableError{recoverable: true}` detail; `Unavailable` and `Canceled` are never
//! used for a task's error, because Nomad reads them as "the plugin is gone".

use prost::Message;
use tonic::{Code, Status};

use crate::engine::{EngineError, ErrorKind};
use crate::proto::{rpc, structs};

/// The type URL of the detail Nomad looks for.
pub const RECOVERABLE_ERROR_TYPE_URL: &str =
    "type.googleapis.com/hashicorp.nomad.plugins.shared.structs.RecoverableError";

/// A status carrying a RecoverableError detail.
pub fn with_recoverable(code: Code, message: impl Into<String>, recoverable: bool) -> Status {
    let message = message.into();
    let detail = prost_types::Any {
        type_url: RECOVERABLE_ERROR_TYPE_URL.to_owned(),
        value: structs::RecoverableError { recoverable }.encode_to_vec(),
    };
    let details = rpc::Status {
        code: code as i32,
        message: message.clone(),
        details: vec![detail],
    }
    .encode_to_vec();
    Status::with_details(code, message, details.into())
}

/// The request is wrong; retrying it cannot help.
pub fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

/// The plugin has not been configured yet.
pub fn not_configured() -> Status {
    with_recoverable(
        Code::FailedPrecondition,
        "the execdriver plugin has not been configured yet (SetConfig)",
        true,
    )
}

/// No task with this id.
pub fn unknown_task(task_id: &str) -> Status {
    Status::not_found(format!(
        "task {task_id:?} is not known to the execdriver plugin"
    ))
}

/// The status for an engine error, with `context` (what was being done) in front.
pub fn engine(context: &str, e: &EngineError) -> Status {
    let message = format!("{context}: {}", e.message);
    match e.kind {
        ErrorKind::Invalid => Status::invalid_argument(message),
        ErrorKind::Transient => with_recoverable(Code::FailedPrecondition, message, true),
        ErrorKind::NotRunning => with_recoverable(Code::FailedPrecondition, message, false),
        ErrorKind::Refused => Status::permission_denied(message),
        ErrorKind::Lost | ErrorKind::Failed => Status::internal(message),
    }
}

/// A blocking call that could not finish (its thread panicked or the runtime is closing).
pub fn join(context: &str, e: &tokio::task::JoinError) -> Status {
    Status::internal(format!("{context}: the engine call did not finish: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recoverable_status_carries_the_detail_nomad_reads() {
        let status = with_recoverable(Code::FailedPrecondition, "try again", true);
        assert_eq!(status.code(), Code::FailedPrecondition);
        let decoded = rpc::Status::decode(status.details()).expect("status details");
        assert_eq!(decoded.code, Code::FailedPrecondition as i32);
        assert_eq!(decoded.message, "try again");
        assert_eq!(decoded.details.len(), 1);
        assert_eq!(decoded.details[0].type_url, RECOVERABLE_ERROR_TYPE_URL);
        let detail =
            structs::RecoverableError::decode(decoded.details[0].value.as_slice()).expect("detail");
        assert!(detail.recoverable);
    }

    #[test]
    fn no_engine_error_reads_as_plugin_gone() {
        for kind in [
            ErrorKind::Invalid,
            ErrorKind::Transient,
            ErrorKind::NotRunning,
            ErrorKind::Refused,
            ErrorKind::Lost,
            ErrorKind::Failed,
        ] {
            let status = engine(
                "x",
                &EngineError {
                    kind,
                    message: "m".into(),
                },
            );
            assert!(!matches!(
                status.code(),
                Code::Unavailable | Code::Cancelled
            ));
            assert_eq!(status.message(), "x: m");
        }
    }
}
