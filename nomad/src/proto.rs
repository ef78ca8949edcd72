//! The code generated from `proto/`. The modules mirror the protobuf packages, because the
//! generated code names the types of other packages by relative path; short aliases follow.
#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]

pub mod grpc {
    pub mod health {
        pub mod v1 {
            tonic::include_proto!("grpc.health.v1");
        }
    }
}

pub mod plugin {
    tonic::include_proto!("plugin");
}

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub mod hashicorp {
    pub mod nomad {
        pub mod plugins {
            pub mod shared {
                pub mod hclspec {
                    tonic::include_proto!("hashicorp.nomad.plugins.shared.hclspec");
                }
                pub mod structs {
                    tonic::include_proto!("hashicorp.nomad.plugins.shared.structs");
                }
            }
            pub mod base {
                pub mod proto {
                    tonic::include_proto!("hashicorp.nomad.plugins.base.proto");
                }
            }
            pub mod drivers {
                pub mod proto {
                    tonic::include_proto!("hashicorp.nomad.plugins.drivers.proto");
                }
            }
        }
    }
}

/// `google.rpc`: the status message carrying typed error details.
pub use google::rpc;
/// `grpc.health.v1`: the standard health service go-plugin pings.
pub use grpc::health::v1 as health;
/// `hashicorp.nomad.plugins.base.proto`: the BasePlugin service.
pub use hashicorp::nomad::plugins::base::proto as base;
/// `hashicorp.nomad.plugins.drivers.proto`: the Driver service.
pub use hashicorp::nomad::plugins::drivers::proto as drivers;
/// `hashicorp.nomad.plugins.shared.hclspec`: config schemas.
pub use hashicorp::nomad::plugins::shared::hclspec;
/// `hashicorp.nomad.plugins.shared.structs`: attributes and the recoverable-error detail.
pub use hashicorp::nomad::plugins::shared::structs;
/// `plugin`: go-plugin's controller, stdio and broker services.
pub use plugin as go_plugin;
