//! Generated protobuf/gRPC bindings for the Nomad plugin protocol.
//!
//! `build.rs` compiles the `.proto` files under `proto/` (our own, with the package names and
//! field numbers of Nomad's; see ARCHITECTURE.md, "Nomad-side conformance") with `protox` +
//! `tonic-prost-build`.
//! This module only includes that generated code. The module tree mirrors
//! the protobuf packages because generated code refers to other packages
//! through relative `super::` paths; short aliases are re-exported below:
//!
//! | alias | protobuf package |
//! |---|---|
//! | [`plugin`] | `plugin` (go-plugin controller, stdio, broker) |
//! | [`hclspec`] | `hashicorp.nomad.plugins.shared.hclspec` |
//! | [`structs`] | `hashicorp.nomad.plugins.shared.structs` |
//! | [`base`] | `hashicorp.nomad.plugins.base.proto` |
//! | [`drivers`] | `hashicorp.nomad.plugins.drivers.proto` |
//!
//! Each service has a server (`<service>_server::<Service>` trait plus
//! `<Service>Server`) and a client (`<service>_client::<Service>Client`).

// Generated code: keep crate-wide doc/pedantic lints off it.
#![allow(missing_docs, clippy::pedantic)]

/// Package `plugin`: go-plugin infrastructure services.
pub mod plugin {
    tonic::include_proto!("plugin");
}

/// Packages under `hashicorp.*`.
pub mod hashicorp {
    /// Packages under `hashicorp.nomad.*`.
    pub mod nomad {
        /// Packages under `hashicorp.nomad.plugins.*`.
        pub mod plugins {
            /// Packages under `hashicorp.nomad.plugins.shared.*`.
            pub mod shared {
                /// Package `hashicorp.nomad.plugins.shared.hclspec`.
                pub mod hclspec {
                    tonic::include_proto!("hashicorp.nomad.plugins.shared.hclspec");
                }
                /// Package `hashicorp.nomad.plugins.shared.structs`.
                pub mod structs {
                    tonic::include_proto!("hashicorp.nomad.plugins.shared.structs");
                }
            }
            /// Packages under `hashicorp.nomad.plugins.base.*`.
            pub mod base {
                /// Package `hashicorp.nomad.plugins.base.proto`.
                pub mod proto {
                    tonic::include_proto!("hashicorp.nomad.plugins.base.proto");
                }
            }
            /// Packages under `hashicorp.nomad.plugins.drivers.*`.
            pub mod drivers {
                /// Package `hashicorp.nomad.plugins.drivers.proto`.
                pub mod proto {
                    tonic::include_proto!("hashicorp.nomad.plugins.drivers.proto");
                }
            }
        }
    }
}

pub use hashicorp::nomad::plugins::base::proto as base;
pub use hashicorp::nomad::plugins::drivers::proto as drivers;
pub use hashicorp::nomad::plugins::shared::hclspec;
pub use hashicorp::nomad::plugins::shared::structs;

/// Encoded `google.protobuf.FileDescriptorSet` of every compiled `.proto`
/// file (with imports and source info), e.g. for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));
