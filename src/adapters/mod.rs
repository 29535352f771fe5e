//! Translations between what vSphere reports and the engines' plain data. Adapters import
//! `vsphere` and `engine`, and neither imports them, so the engines stay pure and the
//! client stays free of their models.

pub mod placement_inventory;
