//! Whether this node can run tasks: root, cgroups and controllers, kernel. (OWNED BY THE
//! SUPERVISOR/PLATFORM WORK.)
