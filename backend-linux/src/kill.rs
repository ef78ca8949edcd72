//! The kill path: force kill through the supervisor, and the orphan cleanup by cgroup
//! membership. (OWNED BY THE SUPERVISOR/PLATFORM WORK.)
