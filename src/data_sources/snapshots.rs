//! `ceso_snapshots`: the snapshot tree of one VM, flattened (parents before children).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cty::Type;
use crate::framework::typed_data_source::TypedDataSource;
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Schema};
use crate::session::{error_diagnostics, lookup_diagnostics, Call, Vsphere};
use crate::vsphere::types::ManagedObjectReference;

/// The `ceso_snapshots` data source.
pub struct Snapshots;

#[derive(Serialize, Deserialize)]
struct Entry {
    id: String,
    name: String,
    description: String,
    parent_id: Option<String>,
    create_time: String,
    quiesced: bool,
    is_current: bool,
}

#[derive(Serialize, Deserialize)]
/// The data source's configuration and state.
pub struct SnapshotsModel {
    endpoint: Option<String>,
    vm_id: String,
    current_id: Option<String>,
    snapshots: Option<Vec<Entry>>,
}

crate::endpoint_scoped!(SnapshotsModel);

fn entry_type() -> Type {
    Type::object([
        ("id", Type::String),
        ("name", Type::String),
        ("description", Type::String),
        ("parent_id", Type::String),
        ("create_time", Type::String),
        ("quiesced", Type::Bool),
        ("is_current", Type::Bool),
    ])
}

#[async_trait]
impl TypedDataSource for Snapshots {
    type Model = SnapshotsModel;
    type Connect = Vsphere;
    const TYPE_NAME: &'static str = "ceso_snapshots";

    fn schema() -> Schema {
        Schema::new(
            Block::new()
                .description("The snapshots of one VM, parents before children, with the current one marked.")
                .attribute(crate::session::endpoint_attribute(false))
                .attribute(Attribute::string("vm_id").required().description("The VM: a `ceso_vm`'s `id` (instance UUID) or its `moid`."))
                .attribute(Attribute::string("current_id").computed().description("The current snapshot's id; null without snapshots."))
                .attribute(Attribute::new("snapshots", Type::List(Box::new(entry_type()))).computed().description("Every snapshot: `id`, `name`, `description`, `parent_id`, `create_time`, `quiesced`, `is_current`.")),
        )
    }

    async fn read(
        &self,
        call: &Call<'_>,
        mut m: SnapshotsModel,
    ) -> Result<SnapshotsModel, Diagnostics> {
        let client = &call.conn;
        let vm = if m.vm_id.starts_with("vm-") {
            ManagedObjectReference::new("VirtualMachine", &m.vm_id)
        } else {
            client
                .find_vm_by_uuid(&m.vm_id, true)
                .await
                .map_err(|e| lookup_diagnostics(AttrPath::attr("vm_id"), "Unknown VM", &e))?
        };
        let tree = client
            .snapshot_tree(&vm)
            .await
            .map_err(|e| error_diagnostics("read the snapshots", &e))?;
        m.current_id = tree.current.as_ref().map(|c| c.value.clone());
        m.snapshots = Some(
            tree.snapshots
                .iter()
                .map(|s| Entry {
                    id: s.obj.value.clone(),
                    name: s.name.clone(),
                    description: s.description.clone(),
                    parent_id: s.parent.as_ref().map(|p| p.value.clone()),
                    create_time: s.create_time.clone(),
                    quiesced: s.quiesced,
                    is_current: tree.current.as_ref() == Some(&s.obj),
                })
                .collect(),
        );
        Ok(m)
    }
}
