//! The Terraform plugin protocol: the go-plugin handshake with AutoMTLS, the tfplugin5 gRPC
//! service (one function per RPC: from proto, to the framework, back to proto), go-plugin's
//! controller, stdio and broker services, gRPC health, and hclog-format logging.
//!
//! Architecture invariant: this is the only module that sees prost or generated tfplugin5 types.

pub mod convert;
pub mod handshake;
pub mod hclog;
pub mod mtls;
pub mod plugin_services;
pub mod serve;
pub mod server;

/// Generated code for the protocol's wire messages and services.
pub mod proto {
    /// Terraform plugin protocol 5 (version 5.10).
    pub mod tfplugin5 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("tfplugin5");
    }
    /// go-plugin's own services (controller, stdio, broker).
    pub mod plugin {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("plugin");
    }
}

pub use serve::{serve, ServeError, ServeOptions};

/// The largest gRPC message accepted or sent, both ways (tonic's default 4 MiB breaks big plans).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
