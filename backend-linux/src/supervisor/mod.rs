//! The supervisor: `execdriver supervise`. (OWNED BY THE SUPERVISOR/PLATFORM WORK.)
