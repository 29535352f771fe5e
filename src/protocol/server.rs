//! The tfplugin5 `Provider` service: one function per RPC that decodes the request, calls the
//! framework, and encodes the answer. Every failure is a diagnostic, never a gRPC error or a
//! panic; RPCs for features ceso does not offer answer "not supported by this provider".

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::cty::{Type, Value};
use crate::framework::lifecycle::{self, ResourceType};
use crate::framework::resource::ApplyRequest;
use crate::framework::validate::validate_config;
use crate::framework::{
    Action, AttrPath, Context, DataSource, Diagnostics, Provider, ProviderData, Resource, Schema,
};

use super::convert::{decode, diags_to_proto, encode, path_to_proto, schema_to_proto};
use super::proto::tfplugin5 as pb;

/// A resource or data source type with its schema computed once.
struct Typed<T: ?Sized> {
    imp: Arc<T>,
    schema: Schema,
    ty: Type,
}

impl<T: ?Sized> Typed<T> {
    fn new(imp: Arc<T>, schema: Schema) -> Self {
        let ty = schema.value_type();
        Self { imp, schema, ty }
    }
}

/// Serves one framework provider over tfplugin5.
pub struct ProviderService {
    provider: Arc<dyn Provider>,
    provider_schema: Schema,
    resources: HashMap<String, Typed<dyn Resource>>,
    data_sources: HashMap<String, Typed<dyn DataSource>>,
    actions: HashMap<String, Typed<dyn Action>>,
    data: RwLock<Option<ProviderData>>,
    cancel: CancellationToken,
}

fn unsupported(what: &str) -> Diagnostics {
    Diagnostics::from_error(
        format!("{what} not supported"),
        format!(
            "{what} is not supported by this provider (ceso {}).",
            env!("CARGO_PKG_VERSION")
        ),
    )
}

fn unknown_type(kind: &str, name: &str) -> Diagnostics {
    Diagnostics::from_error(
        format!("Unknown {kind} type"),
        format!("This provider has no {kind} type {name:?}; check the name or upgrade ceso."),
    )
}

impl ProviderService {
    /// Wraps `provider`, computing every schema once.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        let resources = provider
            .resources()
            .into_iter()
            .map(|r| {
                let s = r.schema();
                (r.type_name().to_string(), Typed::new(r, s))
            })
            .collect();
        let data_sources = provider
            .data_sources()
            .into_iter()
            .map(|d| {
                let s = d.schema();
                (d.type_name().to_string(), Typed::new(d, s))
            })
            .collect();
        let actions = provider
            .actions()
            .into_iter()
            .map(|a| {
                let s = a.schema();
                (a.type_name().to_string(), Typed::new(a, s))
            })
            .collect();
        Self {
            provider_schema: provider.schema(),
            provider,
            resources,
            data_sources,
            actions,
            data: RwLock::new(None),
            cancel: CancellationToken::new(),
        }
    }

    /// The token StopProvider cancels; in-flight work watches it.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The configured provider data, if Configure has run.
    pub fn provider_data(&self) -> Option<ProviderData> {
        self.data.read().expect("lock").clone()
    }

    /// A new context for one RPC: the provider data, the stop signal, and a fresh list of the
    /// warnings the call reports beside its answer.
    fn ctx(&self) -> Context {
        Context {
            provider_data: self.provider_data(),
            cancel: self.cancel.clone(),
            warnings: Default::default(),
        }
    }

    fn resource(&self, name: &str) -> Result<&Typed<dyn Resource>, Diagnostics> {
        self.resources
            .get(name)
            .ok_or_else(|| unknown_type("resource", name))
    }

    fn data_source(&self, name: &str) -> Result<&Typed<dyn DataSource>, Diagnostics> {
        self.data_sources
            .get(name)
            .ok_or_else(|| unknown_type("data source", name))
    }

    fn action(&self, name: &str) -> Result<&Typed<dyn Action>, Diagnostics> {
        self.actions
            .get(name)
            .ok_or_else(|| unknown_type("action", name))
    }

    /// Decodes and validates an action's configuration.
    fn action_config(
        &self,
        name: &str,
        config: Option<&pb::DynamicValue>,
    ) -> Result<(Arc<dyn Action>, Value), Diagnostics> {
        let a = self.action(name)?;
        let value = decode(config, &a.ty, "action configuration")?;
        let mut diags = Diagnostics::new();
        validate_config(&a.schema.block, &value, &AttrPath::root(), &mut diags);
        a.imp.validate(&value, &mut diags);
        if diags.has_errors() {
            return Err(diags);
        }
        Ok((a.imp.clone(), value))
    }

    fn capabilities(&self) -> pb::ServerCapabilities {
        pb::ServerCapabilities {
            plan_destroy: false,
            get_provider_schema_optional: false,
            move_resource_state: false,
            generate_resource_config: false,
        }
    }

    fn resource_type<'a>(
        &'a self,
        name: &str,
    ) -> Result<(&'a Typed<dyn Resource>, ResourceType<'a>), Diagnostics> {
        let r = self.resource(name)?;
        let rt = ResourceType {
            resource: r.imp.as_ref(),
            schema: &r.schema,
            ty: &r.ty,
        };
        Ok((r, rt))
    }

    async fn plan(
        &self,
        ctx: &Context,
        req: pb::plan_resource_change::Request,
    ) -> Result<pb::plan_resource_change::Response, Diagnostics> {
        let (r, rt) = self.resource_type(&req.type_name)?;
        let prior = decode(req.prior_state.as_ref(), &r.ty, "prior state")?;
        let proposed = decode(req.proposed_new_state.as_ref(), &r.ty, "proposed new state")?;
        let config = decode(req.config.as_ref(), &r.ty, "configuration")?;
        let planned = lifecycle::plan(&rt, ctx, &prior, &proposed, &config).await;
        Ok(pb::plan_resource_change::Response {
            planned_state: Some(encode(&planned.state, &r.ty, "planned state")?),
            requires_replace: planned.requires_replace.iter().map(path_to_proto).collect(),
            planned_private: req.prior_private,
            diagnostics: diags_to_proto(&planned.diags),
            legacy_type_system: false,
            deferred: None,
            planned_identity: None,
        })
    }

    async fn apply(
        &self,
        ctx: &Context,
        req: pb::apply_resource_change::Request,
    ) -> Result<pb::apply_resource_change::Response, Diagnostics> {
        let (r, rt) = self.resource_type(&req.type_name)?;
        let prior = decode(req.prior_state.as_ref(), &r.ty, "prior state")?;
        let planned = decode(req.planned_state.as_ref(), &r.ty, "planned state")?;
        let config = decode(req.config.as_ref(), &r.ty, "configuration")?;
        let apply = ApplyRequest {
            prior: &prior,
            planned: &planned,
            config: &config,
            private: &req.planned_private,
        };
        let applied = lifecycle::apply(&rt, ctx, &apply, &req.type_name).await;
        Ok(pb::apply_resource_change::Response {
            new_state: Some(encode(&applied.state, &r.ty, "new state")?),
            private: applied.private.unwrap_or(req.planned_private),
            diagnostics: diags_to_proto(&applied.diags),
            legacy_type_system: false,
            new_identity: None,
        })
    }

    fn upgrade(&self, req: pb::upgrade_resource_state::Request) -> Result<Value, Diagnostics> {
        let (_, rt) = self.resource_type(&req.type_name)?;
        let raw = req.raw_state.unwrap_or_default();
        let json = if raw.json.is_empty() {
            if !raw.flatmap.is_empty() {
                return Err(Diagnostics::from_error(
                    "Unable to upgrade state",
                    "The state is in the legacy flatmap format, which ceso never wrote.",
                ));
            }
            None
        } else {
            Some(serde_json::from_slice(&raw.json).map_err(|e| {
                Diagnostics::from_error(
                    "Unable to upgrade state",
                    format!("The stored state is not JSON: {e}"),
                )
            })?)
        };
        lifecycle::upgrade(&rt, &req.type_name, req.version, json)
    }
}

/// The diagnostic a panic becomes: Terraform shows it, and the plugin keeps serving.
fn internal_error(panic: Box<dyn std::any::Any + Send>) -> Diagnostics {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    tracing::error!(panic = %what, "internal error in an RPC");
    Diagnostics::from_error(
        "Internal error in ceso",
        format!("The provider hit a bug ({what}). Nothing more was done; please report this."),
    )
}

/// Runs the part of an RPC that calls the provider; a panic inside it becomes an error
/// diagnostic, so the RPC can still answer with what it knows (e.g. the prior state).
async fn guarded<T>(
    body: impl std::future::Future<Output = Result<T, Diagnostics>>,
) -> Result<T, Diagnostics> {
    use futures::FutureExt as _;
    match std::panic::AssertUnwindSafe(body).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(internal_error(panic)),
    }
}

/// An RPC's response type, and the response that carries only an error: what an RPC answers
/// when its handler panicked.
trait Answer {
    /// The response carrying only `diagnostics`.
    fn failed(diagnostics: Vec<pb::Diagnostic>) -> Self;
}

/// Implements [`Answer`] for responses with a `diagnostics` field (the rest default).
macro_rules! answer_with_diagnostics {
    ($($rpc:ident),* $(,)?) => {
        $(
            impl Answer for pb::$rpc::Response {
                #[allow(clippy::needless_update)] // some responses have no other field
                fn failed(diagnostics: Vec<pb::Diagnostic>) -> Self {
                    Self {
                        diagnostics,
                        ..Default::default()
                    }
                }
            }
        )*
    };
}

answer_with_diagnostics!(
    get_metadata,
    get_provider_schema,
    prepare_provider_config,
    validate_resource_type_config,
    validate_data_source_config,
    upgrade_resource_state,
    get_resource_identity_schemas,
    upgrade_resource_identity,
    configure,
    read_resource,
    plan_resource_change,
    apply_resource_change,
    import_resource_state,
    move_resource_state,
    read_data_source,
    generate_resource_config,
    validate_ephemeral_resource_config,
    open_ephemeral_resource,
    renew_ephemeral_resource,
    close_ephemeral_resource,
    validate_list_resource_config,
    get_functions,
    plan_action,
    validate_action_config,
);

impl Answer for pb::call_function::Response {
    fn failed(diagnostics: Vec<pb::Diagnostic>) -> Self {
        let text = diagnostics
            .iter()
            .map(|d| format!("{}: {}", d.summary, d.detail))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            result: None,
            error: Some(pb::FunctionError {
                text,
                function_argument: None,
            }),
        }
    }
}

impl Answer for pb::stop::Response {
    fn failed(diagnostics: Vec<pb::Diagnostic>) -> Self {
        Self {
            error: diagnostics
                .iter()
                .map(|d| d.detail.clone())
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

impl Answer for EventStream<pb::list_resource::Event> {
    fn failed(diagnostic: Vec<pb::Diagnostic>) -> Self {
        one_event(pb::list_resource::Event {
            diagnostic,
            ..Default::default()
        })
    }
}

impl Answer for EventStream<pb::invoke_action::Event> {
    fn failed(diagnostics: Vec<pb::Diagnostic>) -> Self {
        use pb::invoke_action::event::{Completed, Type as EventType};
        one_event(pb::invoke_action::Event {
            r#type: Some(EventType::Completed(Completed { diagnostics })),
        })
    }
}

/// Answers an RPC with what `handler` builds. Every RPC goes through here: a panic anywhere in
/// a handler, validation included, becomes the response's error diagnostic instead of ending
/// the plugin (Terraform would only report the request as cancelled).
async fn answer<R: Answer>(handler: impl std::future::Future<Output = R>) -> RpcResult<R> {
    use futures::FutureExt as _;
    let response = match std::panic::AssertUnwindSafe(handler).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => R::failed(diags_to_proto(&internal_error(panic))),
    };
    Ok(Response::new(response))
}

type RpcResult<T> = Result<Response<T>, Status>;
type EventStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

fn one_event<T: Send + 'static>(event: T) -> EventStream<T> {
    Box::pin(futures::stream::once(async move { Ok(event) }))
}

#[tonic::async_trait]
impl pb::provider_server::Provider for ProviderService {
    async fn get_metadata(
        &self,
        _req: Request<pb::get_metadata::Request>,
    ) -> RpcResult<pb::get_metadata::Response> {
        answer(async {
            use pb::get_metadata as m;
            let mut resources: Vec<_> = self.resources.keys().cloned().collect();
            let mut data_sources: Vec<_> = self.data_sources.keys().cloned().collect();
            let mut actions: Vec<_> = self.actions.keys().cloned().collect();
            resources.sort();
            data_sources.sort();
            actions.sort();
            m::Response {
                server_capabilities: Some(self.capabilities()),
                diagnostics: Vec::new(),
                data_sources: data_sources
                    .into_iter()
                    .map(|type_name| m::DataSourceMetadata { type_name })
                    .collect(),
                resources: resources
                    .into_iter()
                    .map(|type_name| m::ResourceMetadata { type_name })
                    .collect(),
                functions: Vec::new(),
                ephemeral_resources: Vec::new(),
                list_resources: Vec::new(),
                actions: actions
                    .into_iter()
                    .map(|type_name| m::ActionMetadata { type_name })
                    .collect(),
            }
        })
        .await
    }

    async fn get_schema(
        &self,
        _req: Request<pb::get_provider_schema::Request>,
    ) -> RpcResult<pb::get_provider_schema::Response> {
        answer(async {
            pb::get_provider_schema::Response {
                provider: Some(schema_to_proto(&self.provider_schema)),
                resource_schemas: self
                    .resources
                    .iter()
                    .map(|(k, r)| (k.clone(), schema_to_proto(&r.schema)))
                    .collect(),
                data_source_schemas: self
                    .data_sources
                    .iter()
                    .map(|(k, d)| (k.clone(), schema_to_proto(&d.schema)))
                    .collect(),
                functions: HashMap::new(),
                ephemeral_resource_schemas: HashMap::new(),
                list_resource_schemas: HashMap::new(),
                action_schemas: self
                    .actions
                    .iter()
                    .map(|(k, a)| {
                        (
                            k.clone(),
                            pb::ActionSchema {
                                schema: Some(schema_to_proto(&a.schema)),
                            },
                        )
                    })
                    .collect(),
                diagnostics: Vec::new(),
                provider_meta: None,
                server_capabilities: Some(self.capabilities()),
            }
        })
        .await
    }

    async fn prepare_provider_config(
        &self,
        req: Request<pb::prepare_provider_config::Request>,
    ) -> RpcResult<pb::prepare_provider_config::Response> {
        answer(async {
            let req = req.into_inner();
            let ty = self.provider_schema.value_type();
            let mut diags = Diagnostics::new();
            match decode(req.config.as_ref(), &ty, "provider configuration") {
                Ok(config) => {
                    validate_config(
                        &self.provider_schema.block,
                        &config,
                        &AttrPath::root(),
                        &mut diags,
                    );
                    self.provider.validate(&config, &mut diags);
                }
                Err(d) => diags.extend(d),
            }
            pb::prepare_provider_config::Response {
                prepared_config: req.config,
                diagnostics: diags_to_proto(&diags),
            }
        })
        .await
    }

    async fn validate_resource_type_config(
        &self,
        req: Request<pb::validate_resource_type_config::Request>,
    ) -> RpcResult<pb::validate_resource_type_config::Response> {
        answer(async {
            let req = req.into_inner();
            let diags = match self.resource(&req.type_name) {
                Ok(r) => validate_with(&r.schema, &r.ty, req.config.as_ref(), |c, d| {
                    r.imp.validate(c, d)
                }),
                Err(d) => d,
            };
            pb::validate_resource_type_config::Response {
                diagnostics: diags_to_proto(&diags),
            }
        })
        .await
    }

    async fn validate_data_source_config(
        &self,
        req: Request<pb::validate_data_source_config::Request>,
    ) -> RpcResult<pb::validate_data_source_config::Response> {
        answer(async {
            let req = req.into_inner();
            let diags = match self.data_source(&req.type_name) {
                Ok(ds) => validate_with(&ds.schema, &ds.ty, req.config.as_ref(), |c, d| {
                    ds.imp.validate(c, d)
                }),
                Err(d) => d,
            };
            pb::validate_data_source_config::Response {
                diagnostics: diags_to_proto(&diags),
            }
        })
        .await
    }

    async fn upgrade_resource_state(
        &self,
        req: Request<pb::upgrade_resource_state::Request>,
    ) -> RpcResult<pb::upgrade_resource_state::Response> {
        answer(async {
            let req = req.into_inner();
            let type_name = req.type_name.clone();
            let result = self.upgrade(req).and_then(|v| {
                let r = self.resource(&type_name)?;
                encode(&v, &r.ty, "upgraded state")
            });
            match result {
                Ok(state) => pb::upgrade_resource_state::Response {
                    upgraded_state: Some(state),
                    diagnostics: Vec::new(),
                },
                Err(d) => pb::upgrade_resource_state::Response {
                    upgraded_state: None,
                    diagnostics: diags_to_proto(&d),
                },
            }
        })
        .await
    }

    async fn get_resource_identity_schemas(
        &self,
        _req: Request<pb::get_resource_identity_schemas::Request>,
    ) -> RpcResult<pb::get_resource_identity_schemas::Response> {
        answer(async {
            pb::get_resource_identity_schemas::Response {
                identity_schemas: HashMap::new(),
                diagnostics: Vec::new(),
            }
        })
        .await
    }

    async fn upgrade_resource_identity(
        &self,
        _req: Request<pb::upgrade_resource_identity::Request>,
    ) -> RpcResult<pb::upgrade_resource_identity::Response> {
        answer(async {
            pb::upgrade_resource_identity::Response {
                upgraded_identity: None,
                diagnostics: diags_to_proto(&unsupported("Resource identity")),
            }
        })
        .await
    }

    async fn configure(
        &self,
        req: Request<pb::configure::Request>,
    ) -> RpcResult<pb::configure::Response> {
        answer(async {
            let req = req.into_inner();
            let ty = self.provider_schema.value_type();
            let ctx = self.ctx();
            let mut diags = match decode(req.config.as_ref(), &ty, "provider configuration") {
                Err(d) => d,
                Ok(config) if !config.is_wholly_known() => Diagnostics::from_error(
                    "Provider configuration not known yet",
                    "Some provider arguments depend on values known only after apply; ceso needs url, user and password at plan time.",
                ),
                Ok(config) => match guarded(self.provider.configure(&ctx, &config)).await {
                    Ok(data) => {
                        *self.data.write().expect("lock") = Some(data);
                        Diagnostics::new()
                    }
                    Err(d) => d,
                },
            };
            diags.extend(ctx.warnings.take());
            pb::configure::Response {
                diagnostics: diags_to_proto(&diags),
            }
        })
        .await
    }

    async fn read_resource(
        &self,
        req: Request<pb::read_resource::Request>,
    ) -> RpcResult<pb::read_resource::Response> {
        answer(async {
            let req = req.into_inner();
            let ctx = self.ctx();
            let result = guarded(async {
                let (r, rt) = self.resource_type(&req.type_name)?;
                let state = decode(req.current_state.as_ref(), &r.ty, "current state")?;
                let new_state = lifecycle::read(&rt, &ctx, &state).await?;
                encode(&new_state, &r.ty, "new state")
            })
            .await;
            let warnings = ctx.warnings.take();
            match result {
                Ok(state) => pb::read_resource::Response {
                    new_state: Some(state),
                    diagnostics: diags_to_proto(&warnings),
                    private: req.private,
                    deferred: None,
                    new_identity: None,
                },
                Err(mut d) => {
                    d.extend(warnings);
                    pb::read_resource::Response {
                        new_state: req.current_state,
                        diagnostics: diags_to_proto(&d),
                        private: req.private,
                        deferred: None,
                        new_identity: None,
                    }
                }
            }
        })
        .await
    }

    async fn plan_resource_change(
        &self,
        req: Request<pb::plan_resource_change::Request>,
    ) -> RpcResult<pb::plan_resource_change::Response> {
        answer(async {
            let ctx = self.ctx();
            let mut response = guarded(self.plan(&ctx, req.into_inner()))
                .await
                .unwrap_or_else(|d| pb::plan_resource_change::Response {
                    diagnostics: diags_to_proto(&d),
                    ..Default::default()
                });
            response
                .diagnostics
                .extend(diags_to_proto(&ctx.warnings.take()));
            response
        })
        .await
    }

    async fn apply_resource_change(
        &self,
        req: Request<pb::apply_resource_change::Request>,
    ) -> RpcResult<pb::apply_resource_change::Response> {
        answer(async {
            let req = req.into_inner();
            let prior = req.prior_state.clone();
            let ctx = self.ctx();
            let mut response = guarded(self.apply(&ctx, req)).await.unwrap_or_else(|d| {
                pb::apply_resource_change::Response {
                    new_state: prior,
                    diagnostics: diags_to_proto(&d),
                    ..Default::default()
                }
            });
            response
                .diagnostics
                .extend(diags_to_proto(&ctx.warnings.take()));
            response
        })
        .await
    }

    async fn import_resource_state(
        &self,
        req: Request<pb::import_resource_state::Request>,
    ) -> RpcResult<pb::import_resource_state::Response> {
        answer(async {
            let req = req.into_inner();
            let ctx = self.ctx();
            let result = guarded(async {
                let r = self.resource(&req.type_name)?;
                let imported = r.imp.import(&ctx, &req.id).await?;
                imported
                    .into_iter()
                    .map(|i| {
                        let ty = self.resource(&i.type_name)?.ty.clone();
                        Ok(pb::import_resource_state::ImportedResource {
                            type_name: i.type_name,
                            state: Some(encode(&i.state, &ty, "imported state")?),
                            private: i.private,
                            identity: None,
                        })
                    })
                    .collect::<Result<Vec<_>, Diagnostics>>()
            })
            .await;
            let mut diags = ctx.warnings.take();
            match result {
                Ok(imported_resources) => pb::import_resource_state::Response {
                    imported_resources,
                    diagnostics: diags_to_proto(&diags),
                    deferred: None,
                },
                Err(d) => {
                    diags.extend(d);
                    pb::import_resource_state::Response {
                        imported_resources: Vec::new(),
                        diagnostics: diags_to_proto(&diags),
                        deferred: None,
                    }
                }
            }
        })
        .await
    }

    async fn move_resource_state(
        &self,
        _req: Request<pb::move_resource_state::Request>,
    ) -> RpcResult<pb::move_resource_state::Response> {
        answer(async {
            pb::move_resource_state::Response {
                diagnostics: diags_to_proto(&unsupported("Moving resource state between types")),
                ..Default::default()
            }
        })
        .await
    }

    async fn read_data_source(
        &self,
        req: Request<pb::read_data_source::Request>,
    ) -> RpcResult<pb::read_data_source::Response> {
        answer(async {
            let req = req.into_inner();
            let ctx = self.ctx();
            let result = guarded(async {
                let d = self.data_source(&req.type_name)?;
                let config = decode(req.config.as_ref(), &d.ty, "configuration")?;
                let state = tokio::select! {
                    r = d.imp.read(&ctx, &config) => r?,
                    _ = ctx.cancel.cancelled() => return Err(Diagnostics::from_error("Cancelled", "Terraform asked the provider to stop.")),
                };
                encode(&state, &d.ty, "data source state")
            })
            .await;
            let mut diags = ctx.warnings.take();
            match result {
                Ok(state) => pb::read_data_source::Response {
                    state: Some(state),
                    diagnostics: diags_to_proto(&diags),
                    deferred: None,
                },
                Err(d) => {
                    diags.extend(d);
                    pb::read_data_source::Response {
                        state: None,
                        diagnostics: diags_to_proto(&diags),
                        deferred: None,
                    }
                }
            }
        })
        .await
    }

    async fn generate_resource_config(
        &self,
        _req: Request<pb::generate_resource_config::Request>,
    ) -> RpcResult<pb::generate_resource_config::Response> {
        answer(async {
            pb::generate_resource_config::Response {
                config: None,
                diagnostics: diags_to_proto(&unsupported("Generating resource configuration")),
            }
        })
        .await
    }

    async fn validate_ephemeral_resource_config(
        &self,
        req: Request<pb::validate_ephemeral_resource_config::Request>,
    ) -> RpcResult<pb::validate_ephemeral_resource_config::Response> {
        answer(async {
            pb::validate_ephemeral_resource_config::Response {
                diagnostics: diags_to_proto(&unknown_type(
                    "ephemeral resource",
                    &req.into_inner().type_name,
                )),
            }
        })
        .await
    }

    async fn open_ephemeral_resource(
        &self,
        _req: Request<pb::open_ephemeral_resource::Request>,
    ) -> RpcResult<pb::open_ephemeral_resource::Response> {
        answer(async {
            pb::open_ephemeral_resource::Response {
                diagnostics: diags_to_proto(&unsupported("Ephemeral resources")),
                ..Default::default()
            }
        })
        .await
    }

    async fn renew_ephemeral_resource(
        &self,
        _req: Request<pb::renew_ephemeral_resource::Request>,
    ) -> RpcResult<pb::renew_ephemeral_resource::Response> {
        answer(async {
            pb::renew_ephemeral_resource::Response {
                diagnostics: diags_to_proto(&unsupported("Ephemeral resources")),
                ..Default::default()
            }
        })
        .await
    }

    async fn close_ephemeral_resource(
        &self,
        _req: Request<pb::close_ephemeral_resource::Request>,
    ) -> RpcResult<pb::close_ephemeral_resource::Response> {
        answer(async {
            pb::close_ephemeral_resource::Response {
                diagnostics: diags_to_proto(&unsupported("Ephemeral resources")),
            }
        })
        .await
    }

    type ListResourceStream = EventStream<pb::list_resource::Event>;

    async fn list_resource(
        &self,
        req: Request<pb::list_resource::Request>,
    ) -> RpcResult<Self::ListResourceStream> {
        answer(async {
            let name = req.into_inner().type_name;
            one_event(pb::list_resource::Event {
                diagnostic: diags_to_proto(&unknown_type("list resource", &name)),
                ..Default::default()
            })
        })
        .await
    }

    async fn validate_list_resource_config(
        &self,
        req: Request<pb::validate_list_resource_config::Request>,
    ) -> RpcResult<pb::validate_list_resource_config::Response> {
        answer(async {
            pb::validate_list_resource_config::Response {
                diagnostics: diags_to_proto(&unknown_type(
                    "list resource",
                    &req.into_inner().type_name,
                )),
            }
        })
        .await
    }

    async fn get_functions(
        &self,
        _req: Request<pb::get_functions::Request>,
    ) -> RpcResult<pb::get_functions::Response> {
        answer(async {
            pb::get_functions::Response {
                functions: HashMap::new(),
                diagnostics: Vec::new(),
            }
        })
        .await
    }

    async fn call_function(
        &self,
        req: Request<pb::call_function::Request>,
    ) -> RpcResult<pb::call_function::Response> {
        answer(async {
            let name = req.into_inner().name;
            pb::call_function::Response {
                result: None,
                error: Some(pb::FunctionError {
                    text: format!("This provider has no function {name:?}."),
                    function_argument: None,
                }),
            }
        })
        .await
    }

    async fn plan_action(
        &self,
        req: Request<pb::plan_action::Request>,
    ) -> RpcResult<pb::plan_action::Response> {
        answer(async {
            let req = req.into_inner();
            let ctx = self.ctx();
            let mut diags = match self.action_config(&req.action_type, req.config.as_ref()) {
                Err(d) => d,
                Ok((action, config)) => {
                    guarded(async { Ok::<_, Diagnostics>(action.plan(&ctx, &config).await) })
                        .await
                        .unwrap_or_else(|d| d)
                }
            };
            diags.extend(ctx.warnings.take());
            pb::plan_action::Response {
                diagnostics: diags_to_proto(&diags),
                deferred: None,
            }
        })
        .await
    }

    type InvokeActionStream = EventStream<pb::invoke_action::Event>;

    async fn invoke_action(
        &self,
        req: Request<pb::invoke_action::Request>,
    ) -> RpcResult<Self::InvokeActionStream> {
        answer(async {
            use pb::invoke_action::event::{Completed, Progress, Type as EventType};
            let req = req.into_inner();
            let (action, config) = match self.action_config(&req.action_type, req.config.as_ref()) {
                Ok(x) => x,
                Err(d) => return <Self::InvokeActionStream as Answer>::failed(diags_to_proto(&d)),
            };
            // Progress streams to Terraform while the action runs; the last event says how it
            // ended.
            let (tx, rx) =
                tokio::sync::mpsc::unbounded_channel::<Result<pb::invoke_action::Event, Status>>();
            let ctx = self.ctx();
            tokio::spawn(async move {
                let progress_tx = tx.clone();
                let progress = move |message: String| {
                    let _ = progress_tx.send(Ok(pb::invoke_action::Event {
                        r#type: Some(EventType::Progress(Progress { message })),
                    }));
                };
                let mut diags = guarded(async {
                    Ok::<_, Diagnostics>(action.invoke(&ctx, &config, &progress).await)
                })
                .await
                .unwrap_or_else(|d| d);
                diags.extend(ctx.warnings.take());
                let _ = tx.send(Ok(pb::invoke_action::Event {
                    r#type: Some(EventType::Completed(Completed {
                        diagnostics: diags_to_proto(&diags),
                    })),
                }));
            });
            Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
                as Self::InvokeActionStream
        })
        .await
    }

    async fn validate_action_config(
        &self,
        req: Request<pb::validate_action_config::Request>,
    ) -> RpcResult<pb::validate_action_config::Response> {
        answer(async {
            let req = req.into_inner();
            let diags = match self.action_config(&req.type_name, req.config.as_ref()) {
                Ok(_) => Diagnostics::new(),
                Err(d) => d,
            };
            pb::validate_action_config::Response {
                diagnostics: diags_to_proto(&diags),
            }
        })
        .await
    }

    async fn stop(&self, _req: Request<pb::stop::Request>) -> RpcResult<pb::stop::Response> {
        answer(async {
            tracing::info!("StopProvider: cancelling in-flight work");
            self.cancel.cancel();
            pb::stop::Response {
                error: String::new(),
            }
        })
        .await
    }
}

/// The diagnostics of a configuration: decoded as `ty`, checked against `schema`, then by the
/// type's own `check`.
fn validate_with(
    schema: &Schema,
    ty: &Type,
    config: Option<&pb::DynamicValue>,
    check: impl FnOnce(&Value, &mut Diagnostics),
) -> Diagnostics {
    match decode(config, ty, "configuration") {
        Ok(config) => {
            let mut diags = Diagnostics::new();
            validate_config(&schema.block, &config, &AttrPath::root(), &mut diags);
            check(&config, &mut diags);
            diags
        }
        Err(d) => d,
    }
}
#[cfg(test)]
mod tests {
    //! The RPCs driven in-process against a small test provider: the plan pipeline, private
    //! state passthrough, state upgrades, import, StopProvider cancelling a read.

    use std::collections::BTreeMap;
    use std::time::Duration;

    use async_trait::async_trait;
    use pb::provider_server::Provider as _;

    use super::*;
    use crate::framework::resource::{ApplyResult, ImportedResource};
    use crate::framework::{Attribute, Block};

    fn obj(pairs: &[(&str, Value)]) -> Value {
        Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    fn s(x: &str) -> Value {
        Value::String(x.to_string())
    }

    struct Thing;

    #[async_trait]
    impl Resource for Thing {
        fn type_name(&self) -> &'static str {
            "test_thing"
        }
        fn schema(&self) -> Schema {
            Schema::new(
                Block::new()
                    .attribute(Attribute::string("id").computed().use_state_for_unknown())
                    .attribute(Attribute::string("name").required().requires_replace())
                    .attribute(Attribute::string("size").default_value(s("small")))
                    .attribute(Attribute::string("note").optional()),
            )
            .version(1)
        }
        async fn create(&self, _ctx: &Context, req: &ApplyRequest<'_>) -> ApplyResult {
            let mut state = req.planned.clone();
            crate::framework::walk::set_attr(&mut state, "id", s("thing-1"));
            ApplyResult {
                state,
                private: Some(b"created".to_vec()),
                diags: Diagnostics::new(),
            }
        }
        async fn read(&self, _ctx: &Context, state: &Value) -> Result<Option<Value>, Diagnostics> {
            Ok(Some(state.clone()))
        }
        async fn update(&self, _ctx: &Context, req: &ApplyRequest<'_>) -> ApplyResult {
            ApplyResult::ok(req.planned.clone())
        }
        async fn delete(&self, _ctx: &Context, _req: &ApplyRequest<'_>) -> Diagnostics {
            Diagnostics::new()
        }
        async fn import(
            &self,
            _ctx: &Context,
            id: &str,
        ) -> Result<Vec<ImportedResource>, Diagnostics> {
            Ok(vec![ImportedResource {
                type_name: "test_thing".into(),
                state: obj(&[
                    ("id", s(id)),
                    ("name", Value::Null),
                    ("size", Value::Null),
                    ("note", Value::Null),
                ]),
                private: Vec::new(),
            }])
        }
        fn upgrade_state(
            &self,
            version: i64,
            raw: serde_json::Value,
        ) -> Result<Value, Diagnostics> {
            assert_eq!(version, 0);
            // Version 0 called the name `label` and had no size.
            Ok(obj(&[
                ("id", s(raw["id"].as_str().unwrap())),
                ("name", s(raw["label"].as_str().unwrap())),
                ("size", s("small")),
                ("note", Value::Null),
            ]))
        }
    }

    struct Slow;

    #[async_trait]
    impl DataSource for Slow {
        fn type_name(&self) -> &'static str {
            "test_slow"
        }
        fn schema(&self) -> Schema {
            Schema::new(Block::new().attribute(Attribute::string("id").computed()))
        }
        async fn read(&self, _ctx: &Context, _config: &Value) -> Result<Value, Diagnostics> {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(obj(&[("id", s("late"))]))
        }
    }

    struct Panics;

    #[async_trait]
    impl DataSource for Panics {
        fn type_name(&self) -> &'static str {
            "test_panics"
        }
        fn schema(&self) -> Schema {
            Schema::new(Block::new().attribute(Attribute::string("id").computed()))
        }
        fn validate(&self, _config: &Value, _diags: &mut Diagnostics) {
            panic!("validation boom")
        }
        async fn read(&self, _ctx: &Context, _config: &Value) -> Result<Value, Diagnostics> {
            panic!("boom")
        }
    }

    struct TestProvider;

    #[async_trait]
    impl Provider for TestProvider {
        fn type_name(&self) -> &'static str {
            "test"
        }
        fn schema(&self) -> Schema {
            Schema::new(Block::new().attribute(Attribute::bool("panic").optional()))
        }
        fn validate(&self, config: &Value, _diags: &mut Diagnostics) {
            if crate::framework::typed::get_attr(config, "panic") == &Value::Bool(true) {
                let huge: f64 = "1e400".parse().unwrap();
                // What a careless duration parser did: panics on an infinite value.
                let _ = Duration::from_secs_f64(huge);
            }
        }
        async fn configure(
            &self,
            _ctx: &Context,
            _config: &Value,
        ) -> Result<ProviderData, Diagnostics> {
            Ok(Arc::new(()))
        }
        fn resources(&self) -> Vec<Arc<dyn Resource>> {
            vec![Arc::new(Thing)]
        }
        fn data_sources(&self) -> Vec<Arc<dyn DataSource>> {
            vec![Arc::new(Slow), Arc::new(Panics)]
        }
    }

    fn service() -> (ProviderService, Type) {
        let svc = ProviderService::new(Arc::new(TestProvider));
        let ty = svc.resources["test_thing"].ty.clone();
        (svc, ty)
    }

    fn dv(v: &Value, ty: &Type) -> Option<pb::DynamicValue> {
        Some(encode(v, ty, "test").unwrap())
    }

    async fn plan(
        svc: &ProviderService,
        ty: &Type,
        prior: &Value,
        proposed: &Value,
        config: &Value,
        private: &[u8],
    ) -> pb::plan_resource_change::Response {
        svc.plan_resource_change(Request::new(pb::plan_resource_change::Request {
            type_name: "test_thing".into(),
            prior_state: dv(prior, ty),
            proposed_new_state: dv(proposed, ty),
            config: dv(config, ty),
            prior_private: private.to_vec(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
    }

    #[tokio::test]
    async fn create_then_noop_then_replace_with_private_state() {
        let (svc, ty) = service();
        let config = obj(&[
            ("id", Value::Null),
            ("name", s("a")),
            ("size", Value::Null),
            ("note", Value::Null),
        ]);
        let planned = plan(&svc, &ty, &Value::Null, &config, &config, b"").await;
        assert!(planned.diagnostics.is_empty(), "{:?}", planned.diagnostics);
        let planned_value = decode(planned.planned_state.as_ref(), &ty, "t").unwrap();
        assert_eq!(
            planned_value,
            obj(&[
                ("id", Value::Unknown),
                ("name", s("a")),
                ("size", s("small")),
                ("note", Value::Null)
            ])
        );

        let applied = svc
            .apply_resource_change(Request::new(pb::apply_resource_change::Request {
                type_name: "test_thing".into(),
                prior_state: dv(&Value::Null, &ty),
                planned_state: planned.planned_state.clone(),
                config: dv(&config, &ty),
                planned_private: planned.planned_private.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(applied.diagnostics.is_empty());
        assert_eq!(applied.private, b"created");
        let state = decode(applied.new_state.as_ref(), &ty, "t").unwrap();

        // Same config again: a no-op plan that carries the private state through.
        let again = plan(&svc, &ty, &state, &state, &config, &applied.private).await;
        assert_eq!(
            decode(again.planned_state.as_ref(), &ty, "t").unwrap(),
            state
        );
        assert!(again.requires_replace.is_empty());
        assert_eq!(again.planned_private, b"created");

        // A new name replaces; the id stays known in the plan (use_state_for_unknown).
        let renamed_cfg = obj(&[
            ("id", Value::Null),
            ("name", s("b")),
            ("size", Value::Null),
            ("note", Value::Null),
        ]);
        let renamed = obj(&[
            ("id", s("thing-1")),
            ("name", s("b")),
            ("size", s("small")),
            ("note", Value::Null),
        ]);
        let replace = plan(&svc, &ty, &state, &renamed, &renamed_cfg, &applied.private).await;
        assert_eq!(
            replace.requires_replace,
            vec![path_to_proto(&AttrPath::attr("name"))]
        );
    }

    #[tokio::test]
    async fn upgrades_state_from_an_older_schema_version() {
        let (svc, ty) = service();
        let resp = svc
            .upgrade_resource_state(Request::new(pb::upgrade_resource_state::Request {
                type_name: "test_thing".into(),
                version: 0,
                raw_state: Some(pb::RawState {
                    json: br#"{"id":"thing-9","label":"old"}"#.to_vec(),
                    flatmap: Default::default(),
                }),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(resp.diagnostics.is_empty(), "{:?}", resp.diagnostics);
        let v = decode(resp.upgraded_state.as_ref(), &ty, "t").unwrap();
        assert_eq!(crate::framework::typed::get_attr(&v, "name"), &s("old"));

        // Current version: attributes the schema dropped are pruned, the rest kept.
        let resp = svc
            .upgrade_resource_state(Request::new(pb::upgrade_resource_state::Request {
                type_name: "test_thing".into(),
                version: 1,
                raw_state: Some(pb::RawState {
                    json: br#"{"id":"x","name":"n","size":"big","note":null,"gone":1}"#.to_vec(),
                    flatmap: Default::default(),
                }),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(resp.diagnostics.is_empty(), "{:?}", resp.diagnostics);

        // A newer version than ours is refused with a clear message.
        let resp = svc
            .upgrade_resource_state(Request::new(pb::upgrade_resource_state::Request {
                type_name: "test_thing".into(),
                version: 7,
                raw_state: Some(pb::RawState {
                    json: b"{}".to_vec(),
                    flatmap: Default::default(),
                }),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(resp.diagnostics[0].detail.contains("upgrade ceso"));
    }

    #[tokio::test]
    async fn import_returns_the_resource() {
        let (svc, ty) = service();
        let resp = svc
            .import_resource_state(Request::new(pb::import_resource_state::Request {
                type_name: "test_thing".into(),
                id: "thing-42".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let v = decode(resp.imported_resources[0].state.as_ref(), &ty, "t").unwrap();
        assert_eq!(crate::framework::typed::get_attr(&v, "id"), &s("thing-42"));
    }

    #[tokio::test]
    async fn stop_provider_cancels_an_in_flight_read() {
        let (svc, _) = service();
        let svc = Arc::new(svc);
        let reader = {
            let svc = svc.clone();
            tokio::spawn(async move {
                svc.read_data_source(Request::new(pb::read_data_source::Request {
                    type_name: "test_slow".into(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        svc.stop(Request::new(pb::stop::Request {})).await.unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .expect("read ends after Stop")
            .unwrap();
        assert_eq!(resp.diagnostics[0].summary, "Cancelled");
    }

    #[tokio::test]
    async fn a_panic_becomes_a_diagnostic() {
        let (svc, _) = service();
        let resp = svc
            .read_data_source(Request::new(pb::read_data_source::Request {
                type_name: "test_panics".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.diagnostics[0].summary, "Internal error in ceso");
        assert!(resp.diagnostics[0].detail.contains("boom"));
    }

    #[tokio::test]
    async fn a_panic_in_validation_becomes_a_diagnostic_and_the_service_goes_on() {
        let (svc, _) = service();
        let provider_ty = svc.provider_schema.value_type();
        let resp = svc
            .prepare_provider_config(Request::new(pb::prepare_provider_config::Request {
                config: dv(&obj(&[("panic", Value::Bool(true))]), &provider_ty),
            }))
            .await
            .expect("an answer, not a gRPC error")
            .into_inner();
        assert_eq!(resp.diagnostics.len(), 1, "{:?}", resp.diagnostics);
        assert_eq!(resp.diagnostics[0].summary, "Internal error in ceso");
        assert!(
            resp.diagnostics[0].detail.contains("float seconds"),
            "{:?}",
            resp.diagnostics[0]
        );

        let resp = svc
            .validate_data_source_config(Request::new(pb::validate_data_source_config::Request {
                type_name: "test_panics".into(),
                config: dv(
                    &obj(&[("id", Value::Null)]),
                    &svc.data_sources["test_panics"].ty,
                ),
            }))
            .await
            .expect("an answer, not a gRPC error")
            .into_inner();
        assert_eq!(resp.diagnostics[0].summary, "Internal error in ceso");
        assert!(resp.diagnostics[0].detail.contains("validation boom"));

        // The same service still answers.
        let resp = svc
            .prepare_provider_config(Request::new(pb::prepare_provider_config::Request {
                config: dv(&obj(&[("panic", Value::Bool(false))]), &provider_ty),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(resp.diagnostics.is_empty(), "{:?}", resp.diagnostics);
    }

    #[tokio::test]
    async fn warnings_a_call_reports_reach_its_answer() {
        struct Warns;
        #[async_trait]
        impl DataSource for Warns {
            fn type_name(&self) -> &'static str {
                "test_warns"
            }
            fn schema(&self) -> Schema {
                Schema::new(Block::new().attribute(Attribute::string("id").computed()))
            }
            async fn read(&self, ctx: &Context, _config: &Value) -> Result<Value, Diagnostics> {
                ctx.warnings
                    .attr_warning(AttrPath::attr("id"), "Heads up", "made up");
                Ok(obj(&[("id", s("x"))]))
            }
        }
        struct WarnProvider;
        #[async_trait]
        impl Provider for WarnProvider {
            fn type_name(&self) -> &'static str {
                "test"
            }
            fn schema(&self) -> Schema {
                Schema::new(Block::new())
            }
            async fn configure(
                &self,
                _ctx: &Context,
                _config: &Value,
            ) -> Result<ProviderData, Diagnostics> {
                Ok(Arc::new(()))
            }
            fn resources(&self) -> Vec<Arc<dyn Resource>> {
                Vec::new()
            }
            fn data_sources(&self) -> Vec<Arc<dyn DataSource>> {
                vec![Arc::new(Warns)]
            }
        }
        let svc = ProviderService::new(Arc::new(WarnProvider));
        let ty = svc.data_sources["test_warns"].ty.clone();
        let read = || {
            svc.read_data_source(Request::new(pb::read_data_source::Request {
                type_name: "test_warns".into(),
                config: dv(&obj(&[("id", Value::Null)]), &ty),
                ..Default::default()
            }))
        };
        for _ in 0..2 {
            // Each call answers with its own warnings only.
            let resp = read().await.unwrap().into_inner();
            assert!(resp.state.is_some());
            assert_eq!(resp.diagnostics.len(), 1, "{:?}", resp.diagnostics);
            assert_eq!(resp.diagnostics[0].summary, "Heads up");
        }
    }
}
