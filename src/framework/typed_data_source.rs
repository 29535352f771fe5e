//! The shape every data source follows: a schema, a model (the configuration in, the whole
//! state out) and its read. `DataSourceAdapter` serves it as the value-level `DataSource`:
//! the configuration decoded once, the connection the model's scope names resolved once, the
//! answer encoded.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cty::{Type, Value};

use super::diag::Diagnostics;
use super::resource::{Context, DataSource};
use super::schema::Schema;
use super::typed::{from_planned, to_value};
use super::typed_resource::{Call, Config, Connect, Scoped};

/// The connection a typed data source gets.
pub type DataConn<D> = <<D as TypedDataSource>::Connect as Connect>::Conn;

/// A data source written against its model.
#[async_trait]
pub trait TypedDataSource: Send + Sync + Sized + 'static {
    /// Its configuration and state (computed attributes `None` in the configuration).
    type Model: Scoped + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// How it reaches what it reads.
    type Connect: Connect;
    /// Its type name, e.g. `ceso_endpoint`.
    const TYPE_NAME: &'static str;

    /// Its schema.
    fn schema() -> Schema;
    /// Checks the configuration beyond what attribute validators check.
    fn validate(_config: &Config<'_>, _diags: &mut Diagnostics) {}
    /// Reads: the configuration with its computed attributes filled in.
    async fn read(
        &self,
        call: &Call<'_, DataConn<Self>>,
        config: Self::Model,
    ) -> Result<Self::Model, Diagnostics>;
}

/// A typed data source served as a `DataSource`.
pub struct DataSourceAdapter<D> {
    inner: D,
    ty: OnceLock<Type>,
}

impl<D: TypedDataSource> DataSourceAdapter<D> {
    /// Serves `inner`.
    pub fn new(inner: D) -> Arc<Self> {
        Arc::new(Self {
            inner,
            ty: OnceLock::new(),
        })
    }

    fn ty(&self) -> &Type {
        self.ty.get_or_init(|| D::schema().value_type())
    }
}

#[async_trait]
impl<D: TypedDataSource> DataSource for DataSourceAdapter<D> {
    fn type_name(&self) -> &'static str {
        D::TYPE_NAME
    }

    fn schema(&self) -> Schema {
        D::schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        D::validate(&Config(config), diags);
    }

    async fn read(&self, ctx: &Context, config: &Value) -> Result<Value, Diagnostics> {
        let model: D::Model = from_planned(config, self.ty())?;
        let conn = D::Connect::connect(ctx, model.scope()).await?;
        let call = Call { ctx, conn };
        let state = self.inner.read(&call, model).await?;
        to_value(&state, self.ty())
    }
}
