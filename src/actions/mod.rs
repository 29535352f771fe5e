//! The provider's actions (Terraform 1.14+ `action` blocks), one module each.

pub mod snapshot_revert;
