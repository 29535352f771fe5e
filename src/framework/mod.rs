//! The author-facing provider framework: schemas, diagnostics, validators, plan modifiers, the
//! plan pipeline and the traits a provider, resource or data source implements.
//!
//! Architecture invariant: nothing here sees prost or tfplugin5 types (that is `protocol`'s job),
//! and nothing here knows about vSphere.

pub mod decode;
pub mod diag;
pub mod lifecycle;
pub mod path;
pub mod plan;
pub mod plan_modifier;
pub mod resource;
pub mod schema;
pub mod timeouts;
pub mod tri;
pub mod typed;
pub mod typed_data_source;
pub mod typed_resource;
pub mod validate;
pub mod validator;
pub(crate) mod walk;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use path::AttrPath;
pub use resource::{
    Action, ApplyRequest, Context, DataSource, ImportedResource, Provider, ProviderData, Resource,
    Warnings,
};
pub use schema::{Attribute, Block, NestedBlock, Nesting, Schema};
pub use tri::Tri;
