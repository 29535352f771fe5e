//! `ceso_endpoint`: what the configured vSphere endpoint is (product, version, build, API type,
//! ESXi or vCenter), read from its service content.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::framework::typed_data_source::TypedDataSource;
use crate::framework::{Attribute, Block, Diagnostics, Schema};
use crate::session::{Call, Vsphere};

/// The `ceso_endpoint` data source.
pub struct Endpoint;

/// The data source's state.
#[derive(Serialize, Deserialize)]
/// The data source's configuration and state.
pub struct EndpointModel {
    endpoint: Option<String>,
    id: Option<String>,
    url: Option<String>,
    product_name: Option<String>,
    full_name: Option<String>,
    vendor: Option<String>,
    version: Option<String>,
    build: Option<String>,
    api_type: Option<String>,
    api_version: Option<String>,
    product_line: Option<String>,
    is_vcenter: Option<bool>,
    instance_uuid: Option<String>,
}

crate::endpoint_scoped!(EndpointModel);

fn computed(name: &str, description: &str) -> Attribute {
    Attribute::string(name).computed().description(description)
}

#[async_trait]
impl TypedDataSource for Endpoint {
    type Model = EndpointModel;
    type Connect = Vsphere;
    const TYPE_NAME: &'static str = "ceso_endpoint";

    fn schema() -> Schema {
        Schema::new(
            Block::new()
                .description("What the configured vSphere endpoint is: ESXi host or vCenter, product, version and build. Resources use the same facts to choose ESXi or vCenter code paths.")
                .attribute(crate::session::endpoint_attribute(false))
                .attribute(computed("id", "The endpoint's instance UUID on vCenter; its SDK URL on ESXi."))
                .attribute(computed("url", "The SDK URL the provider talks to."))
                .attribute(computed("product_name", "Short product name, e.g. `VMware ESXi` or `VMware vCenter Server`."))
                .attribute(computed("full_name", "Product name with version and build."))
                .attribute(computed("vendor", "Vendor name."))
                .attribute(computed("version", "Product version, e.g. `8.0.2`."))
                .attribute(computed("build", "Build number."))
                .attribute(computed("api_type", "`HostAgent` for ESXi, `VirtualCenter` for vCenter."))
                .attribute(computed("api_version", "The newest vSphere API version the endpoint speaks."))
                .attribute(computed("product_line", "Product line id: `embeddedEsx`, `esx` or `vpx`."))
                .attribute(Attribute::bool("is_vcenter").computed().description("Whether the endpoint is a vCenter Server."))
                .attribute(computed("instance_uuid", "vCenter's instance UUID; null on ESXi.")),
        )
    }

    async fn read(
        &self,
        call: &Call<'_>,
        config: EndpointModel,
    ) -> Result<EndpointModel, Diagnostics> {
        let client = &call.conn;
        let about = client.about();
        let instance_uuid = about.instance_uuid.clone().filter(|u| !u.is_empty());
        let model = EndpointModel {
            endpoint: config.endpoint,
            id: Some(
                instance_uuid
                    .clone()
                    .unwrap_or_else(|| client.url().to_string()),
            ),
            url: Some(client.url().to_string()),
            product_name: Some(about.name.clone()),
            full_name: Some(about.full_name.clone()),
            vendor: Some(about.vendor.clone()),
            version: Some(about.version.clone()),
            build: Some(about.build.clone()),
            api_type: Some(about.api_type.clone()),
            api_version: Some(about.api_version.clone()),
            product_line: Some(about.product_line_id.clone()),
            is_vcenter: Some(about.is_vcenter()),
            instance_uuid,
        };
        Ok(model)
    }
}
