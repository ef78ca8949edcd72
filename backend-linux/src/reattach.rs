//! The reattach path: confine a handle id, connect, verify the supervisor's hello, fall back
//! to the exit record. (OWNED BY THE SUPERVISOR/PLATFORM WORK.)
