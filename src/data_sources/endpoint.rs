//! `ceso_endpoint`: what the configured vSphere endpoint is (product, version, build, API type,
//! ESXi or vCenter), read from its service content.

use async_trait::async_trait;
use serde::Serialize;

use crate::cty::Value;
use crate::framework::{typed, Attribute, Block, Context, DataSource, Diagnostics, Schema};
use crate::session::{client, endpoint_of};

/// The `ceso_endpoint` data source.
pub struct Endpoint;

/// The data source's state.
#[derive(Serialize)]
struct EndpointModel {
    endpoint: Option<String>,
    id: String,
    url: String,
    product_name: String,
    full_name: String,
    vendor: String,
    version: String,
    build: String,
    api_type: String,
    api_version: String,
    product_line: String,
    is_vcenter: bool,
    instance_uuid: Option<String>,
}

fn computed(name: &str, description: &str) -> Attribute {
    Attribute::string(name).computed().description(description)
}

#[async_trait]
impl DataSource for Endpoint {
    fn type_name(&self) -> &'static str {
        "ceso_endpoint"
    }

    fn schema(&self) -> Schema {
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

    async fn read(&self, ctx: &Context, config: &Value) -> Result<Value, Diagnostics> {
        let client = client(ctx, endpoint_of(config)).await?;
        let about = client.about();
        let instance_uuid = about.instance_uuid.clone().filter(|u| !u.is_empty());
        let model = EndpointModel {
            endpoint: endpoint_of(config).map(str::to_string),
            id: instance_uuid
                .clone()
                .unwrap_or_else(|| client.url().to_string()),
            url: client.url().to_string(),
            product_name: about.name.clone(),
            full_name: about.full_name.clone(),
            vendor: about.vendor.clone(),
            version: about.version.clone(),
            build: about.build.clone(),
            api_type: about.api_type.clone(),
            api_version: about.api_version.clone(),
            product_line: about.product_line_id.clone(),
            is_vcenter: about.is_vcenter(),
            instance_uuid,
        };
        typed::to_value(&model, &self.schema().value_type())
    }
}
