//! Finding managed objects: by inventory path (as govc writes them, e.g. `/DC0/vm/web-01`), by
//! name of a given type (with a clear "ambiguous" error), by reference, and VMs by BIOS or
//! instance UUID.

use super::client::Client;
use super::error::{Error, ErrorKind, Result};
use super::methods::{FindByInventoryPath, FindByUuid};
use super::types::ManagedObjectReference;

impl Client {
    fn search_index(&self) -> Result<ManagedObjectReference> {
        self.service_content()
            .search_index
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::NotVsphere, "the endpoint has no search index"))
    }

    /// The object at an inventory path such as `/DC0/vm/folder/web-01` (leading `/` optional).
    pub async fn find_by_path(&self, path: &str) -> Result<ManagedObjectReference> {
        let relative = path.trim().trim_start_matches('/');
        self.call(&FindByInventoryPath {
            this: self.search_index()?,
            path: relative.to_string(),
        })
        .await?
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("nothing at inventory path {path:?}"),
            )
        })
    }

    /// A VM by BIOS UUID (`instance = false`) or instance UUID (`instance = true`).
    pub async fn find_vm_by_uuid(
        &self,
        uuid: &str,
        instance: bool,
    ) -> Result<ManagedObjectReference> {
        let kind = if instance { "instance" } else { "BIOS" };
        self.call(&FindByUuid {
            this: self.search_index()?,
            datacenter: None,
            uuid: uuid.to_string(),
            vm_search: true,
            instance_uuid: instance,
        })
        .await?
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no VM with {kind} UUID {uuid}"),
            )
        })
    }

    /// A VM given as its moid (`vm-42`) or instance UUID, after checking it exists.
    pub async fn find_vm_by_id(&self, id: &str) -> Result<ManagedObjectReference> {
        if id.starts_with("vm-") {
            self.find_by_ref(&ManagedObjectReference::new("VirtualMachine", id))
                .await
        } else {
            self.find_vm_by_uuid(id, true).await
        }
    }

    /// The one object of type `kind` named `name`; several are an `InvalidArgument` error that
    /// lists them.
    pub async fn find_by_name(&self, kind: &str, name: &str) -> Result<ManagedObjectReference> {
        let mut matches: Vec<ManagedObjectReference> = self
            .retrieve_all(kind, &["name"])
            .await?
            .into_iter()
            .filter(|o| o.text("name") == Some(name))
            .map(|o| o.obj)
            .collect();
        match matches.len() {
            0 => Err(Error::new(ErrorKind::NotFound, format!("no {kind} named {name:?}"))),
            1 => Ok(matches.remove(0)),
            n => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{kind} name {name:?} is ambiguous: {n} matches: {}; use an inventory path or id instead",
                    matches.iter().map(|m| m.value.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// `obj` itself, after checking it exists (a deleted object is `NotFound`).
    pub async fn find_by_ref(
        &self,
        obj: &ManagedObjectReference,
    ) -> Result<ManagedObjectReference> {
        self.properties(obj, &["name"]).await.map(|o| o.obj)
    }
}
