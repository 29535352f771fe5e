//! vSphere data objects the client decodes: managed object references, the service content
//! and its `about` info, and the user session.

use serde::{Deserialize, Serialize};

/// A reference to a server-side managed object, e.g. `VirtualMachine:vm-42`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ManagedObjectReference {
    /// The object's type, e.g. `VirtualMachine`.
    #[serde(rename = "@type")]
    pub kind: String,
    /// Its id, e.g. `vm-42`.
    #[serde(rename = "$text")]
    pub value: String,
}

impl ManagedObjectReference {
    /// A reference of type `kind` with id `value`.
    pub fn new(kind: &str, value: &str) -> Self {
        Self {
            kind: kind.to_string(),
            value: value.to_string(),
        }
    }

    /// The service instance, the root every session starts from.
    pub fn service_instance() -> Self {
        Self::new("ServiceInstance", "ServiceInstance")
    }
}

impl std::fmt::Display for ManagedObjectReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// What the endpoint is: product, version, API type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AboutInfo {
    /// Short product name, e.g. `VMware ESXi`.
    pub name: String,
    /// Full name with version and build.
    pub full_name: String,
    /// Vendor.
    pub vendor: String,
    /// Product version, e.g. `8.0.2`.
    pub version: String,
    /// Build number.
    pub build: String,
    /// Operating system type of the server.
    pub os_type: String,
    /// Product line: `embeddedEsx`, `esx`, `vpx`.
    pub product_line_id: String,
    /// `HostAgent` (ESXi) or `VirtualCenter` (vCenter).
    pub api_type: String,
    /// The newest API version the server speaks, e.g. `8.0.2.0`.
    pub api_version: String,
    /// vCenter's instance UUID (absent on ESXi).
    pub instance_uuid: Option<String>,
}

impl AboutInfo {
    /// Whether the endpoint is a vCenter server.
    pub fn is_vcenter(&self) -> bool {
        self.api_type == "VirtualCenter"
    }
}

/// The entry points of a vSphere endpoint (the subset the client uses).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceContent {
    /// The inventory root.
    pub root_folder: ManagedObjectReference,
    /// The property collector.
    pub property_collector: ManagedObjectReference,
    /// The view manager (container views).
    pub view_manager: Option<ManagedObjectReference>,
    /// What the endpoint is.
    pub about: AboutInfo,
    /// The session manager (login, logout).
    pub session_manager: Option<ManagedObjectReference>,
    /// The search index (find by UUID, path).
    pub search_index: Option<ManagedObjectReference>,
    /// The file manager.
    pub file_manager: Option<ManagedObjectReference>,
    /// The virtual disk manager.
    pub virtual_disk_manager: Option<ManagedObjectReference>,
    /// The task manager.
    pub task_manager: Option<ManagedObjectReference>,
    /// The OVF manager (import specs from OVF descriptors).
    pub ovf_manager: Option<ManagedObjectReference>,
}

/// A logged-in session.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserSession {
    /// The session key (a secret: never logged).
    #[serde(skip_serializing)]
    pub key: String,
    /// The user name.
    pub user_name: String,
    /// The user's full name.
    pub full_name: String,
}

impl std::fmt::Display for UserSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session of {}", self.user_name)
    }
}
