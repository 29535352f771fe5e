//! The shape every resource follows: a schema, a model, and its CRUD on models. `Adapter`
//! turns a `TypedResource` into the value-level `Resource` the protocol serves, doing once
//! what each resource would otherwise do by hand: decoding values into the model, resolving
//! the connection the model's scope names, keeping prior state where an apply learnt nothing
//! new, scoped import ids (`@SCOPE/ID`), and encoding the answer.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cty::{Type, Value};

use super::diag::Diagnostics;
use super::path::AttrPath;
use super::resource::{
    ApplyRequest, ApplyResult, Context, ImportedResource, PlanRequest, Resource,
};
use super::schema::Schema;
use super::typed::{from_planned, to_value};
use super::walk::set_attr;

/// A value that names the connection scope it lives in (ceso: its `endpoint`).
pub trait Scoped {
    /// The scope; `None` is the default one.
    fn scope(&self) -> Option<&str>;
}

/// A resource's model: its state as a struct, one field per attribute and block.
pub trait Model: Scoped + Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Records the scope an import named.
    fn set_scope(&mut self, scope: Option<&str>);
}

/// How a resource reaches what it manages, resolved once per call from the model's scope
/// (ceso: an endpoint name to its shared vSphere session).
#[async_trait]
pub trait Connect: Send + Sync + 'static {
    /// The connection handed to the resource.
    type Conn: Send + Sync;
    /// Opens (or reuses) the connection for `scope`.
    async fn connect(ctx: &Context, scope: Option<&str>) -> Result<Self::Conn, Diagnostics>;
}

/// One call of a typed resource: the call's context and its connection.
pub struct Call<'a, C> {
    /// The call's context (cancellation, warnings).
    pub ctx: &'a Context,
    /// The connection the model's scope names.
    pub conn: C,
}

/// The outcome of a create or update.
pub struct Outcome<M> {
    /// The object as it now exists. `None` says nothing new is known: after a create, nothing
    /// was made; after an update, the prior state stands (unless `gone`).
    pub state: Option<M>,
    /// The object was found to no longer exist (state null: the next plan re-creates it).
    pub gone: bool,
    /// Errors and warnings.
    pub diags: Diagnostics,
}

impl<M> Outcome<M> {
    /// A success.
    pub fn ok(state: M) -> Self {
        Self::with(Some(state), Diagnostics::new())
    }

    /// A failure that left nothing new (nothing created, or the prior state as it was).
    pub fn failed(diags: Diagnostics) -> Self {
        Self::with(None, diags)
    }

    /// The object no longer exists.
    pub fn gone(diags: Diagnostics) -> Self {
        Self {
            state: None,
            gone: true,
            diags,
        }
    }

    /// What exists now, with the diagnostics of getting there.
    pub fn with(state: Option<M>, diags: Diagnostics) -> Self {
        Self {
            state,
            gone: false,
            diags,
        }
    }
}

/// The plan as a typed resource's hook sees it: the configuration, prior state and plan as
/// models of the resource's choosing (with `Tri` fields where unknown matters), and the plan's
/// changes as explicit edits.
pub struct Plan<'r, 'a> {
    req: &'r mut PlanRequest<'a>,
    ty: &'r Type,
}

impl<'r, 'a> Plan<'r, 'a> {
    /// Whether this plan creates the object.
    pub fn creating(&self) -> bool {
        *self.req.prior == Value::Null
    }

    /// The configuration as `T` (unknowns as `None`, or `Tri::Unknown`).
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, Diagnostics> {
        from_planned(self.req.config, &Type::Dynamic)
    }

    /// The prior state as `T`; `None` on create.
    pub fn prior<T: DeserializeOwned>(&self) -> Result<Option<T>, Diagnostics> {
        if self.creating() {
            return Ok(None);
        }
        from_planned(self.req.prior, &Type::Dynamic).map(Some)
    }

    /// The plan so far as `T`.
    pub fn planned<T: DeserializeOwned>(&self) -> Result<T, Diagnostics> {
        from_planned(&self.req.planned, &Type::Dynamic)
    }

    /// Whether the plan so far changes anything of the prior state (false on create).
    pub fn changes_anything(&self) -> bool {
        !self.creating() && self.req.planned != *self.req.prior
    }

    /// Sets a top-level attribute of the plan (`Tri::Unknown` plans it unknown).
    pub fn set<T: Serialize>(&mut self, attribute: &str, value: &T) -> Result<(), Diagnostics> {
        let ty = self
            .ty
            .attribute_types()
            .and_then(|a| a.get(attribute))
            .ok_or_else(|| {
                Diagnostics::from_error(
                    "Internal error: no such attribute",
                    format!("The plan hook set {attribute:?}, which the schema lacks."),
                )
            })?;
        let value = to_value(value, ty)?;
        set_attr(&mut self.req.planned, attribute, value);
        Ok(())
    }

    /// Marks a top-level attribute unknown until apply.
    pub fn set_unknown(&mut self, attribute: &str) {
        set_attr(&mut self.req.planned, attribute, Value::Unknown);
    }

    /// Says a change of `path` replaces the object.
    pub fn requires_replace(&mut self, path: AttrPath) {
        self.req.requires_replace.push(path);
    }

    /// The plan's diagnostics.
    pub fn diags(&mut self) -> &mut Diagnostics {
        &mut self.req.diags
    }
}

/// A configuration being validated: values may still be unknown (or null where required).
pub struct Config<'a>(pub &'a Value);

impl Config<'_> {
    /// The configuration as `T`, with `Option` or `Tri` fields for what may be unknown.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Diagnostics> {
        from_planned(self.0, &Type::Dynamic)
    }
}

/// The connection a typed resource gets.
pub type Conn<R> = <<R as TypedResource>::Connect as Connect>::Conn;

/// A managed resource type written against its model.
#[async_trait]
pub trait TypedResource: Send + Sync + Sized + 'static {
    /// Its state.
    type Model: Model;
    /// How it reaches what it manages.
    type Connect: Connect;
    /// Its type name, e.g. `ceso_snapshot`.
    const TYPE_NAME: &'static str;

    /// Its schema.
    fn schema() -> Schema;
    /// Checks the configuration beyond what attribute validators check.
    fn validate(_config: &Config<'_>, _diags: &mut Diagnostics) {}
    /// The resource's own plan hook, run after the attribute modifiers.
    async fn plan(&self, _ctx: &Context, _plan: &mut Plan<'_, '_>) {}
    /// Creates the object; returns it as read back.
    async fn create(&self, call: &Call<'_, Conn<Self>>, plan: Self::Model) -> Outcome<Self::Model>;
    /// Reads the object; `None` when it no longer exists.
    async fn read(
        &self,
        call: &Call<'_, Conn<Self>>,
        state: Self::Model,
    ) -> Result<Option<Self::Model>, Diagnostics>;
    /// Updates the object in place; returns it as read back.
    async fn update(
        &self,
        call: &Call<'_, Conn<Self>>,
        prior: Self::Model,
        plan: Self::Model,
    ) -> Outcome<Self::Model>;
    /// Deletes the object; one already gone is not an error.
    async fn delete(&self, call: &Call<'_, Conn<Self>>, prior: Self::Model) -> Diagnostics;
}

/// Import by a user-given id: the objects it names, as models for `read` to fill in.
#[async_trait]
pub trait Import<R: TypedResource>: Send + Sync {
    /// What the id looks like, for the error shown when it names nothing.
    fn id_format(&self) -> &'static str;
    /// The objects `id` names (its `@SCOPE/` prefix already taken off).
    async fn import(
        &self,
        call: &Call<'_, Conn<R>>,
        id: &str,
    ) -> Result<Vec<R::Model>, Diagnostics>;
}

/// An import id `@SCOPE/ID` as the scope and the resource's own id; a plain id has no scope.
pub fn split_scoped_id(id: &str) -> (Option<&str>, &str) {
    match id.strip_prefix('@').and_then(|rest| rest.split_once('/')) {
        Some((scope, rest)) if !scope.is_empty() => (Some(scope), rest),
        _ => (None, id),
    }
}

/// A typed resource served as a `Resource`.
pub struct Adapter<R> {
    inner: R,
    importer: Option<fn(&R) -> &dyn Import<R>>,
    ty: OnceLock<Type>,
}

impl<R: TypedResource> Adapter<R> {
    /// Serves `inner`, which cannot be imported.
    pub fn new(inner: R) -> Arc<Self> {
        Arc::new(Self {
            inner,
            importer: None,
            ty: OnceLock::new(),
        })
    }

    /// Serves `inner` with its import.
    pub fn importable(inner: R) -> Arc<Self>
    where
        R: Import<R>,
    {
        Arc::new(Self {
            inner,
            importer: Some(|r| r as &dyn Import<R>),
            ty: OnceLock::new(),
        })
    }

    fn ty(&self) -> &Type {
        self.ty.get_or_init(|| R::schema().value_type())
    }

    fn state(&self, v: &Value) -> Result<R::Model, Diagnostics> {
        from_planned(v, self.ty())
    }

    fn value(&self, m: &R::Model) -> Result<Value, Diagnostics> {
        to_value(m, self.ty())
    }

    async fn call<'c>(
        &self,
        ctx: &'c Context,
        scope: Option<&str>,
    ) -> Result<Call<'c, Conn<R>>, Diagnostics> {
        let conn = R::Connect::connect(ctx, scope).await?;
        Ok(Call { ctx, conn })
    }

    /// The apply's answer: `fallback` (null on create, the prior state on update) where the
    /// outcome knows nothing new.
    fn answer(&self, outcome: Outcome<R::Model>, fallback: &Value) -> ApplyResult {
        let mut diags = outcome.diags;
        let fallback = if outcome.gone { &Value::Null } else { fallback };
        let state = match outcome.state.map(|m| self.value(&m)) {
            Some(Ok(v)) => v,
            Some(Err(d)) => {
                diags.extend(d);
                fallback.clone()
            }
            None => fallback.clone(),
        };
        ApplyResult {
            state,
            private: None,
            diags,
        }
    }
}

#[async_trait]
impl<R: TypedResource> Resource for Adapter<R> {
    fn type_name(&self) -> &'static str {
        R::TYPE_NAME
    }

    fn schema(&self) -> Schema {
        R::schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        R::validate(&Config(config), diags);
    }

    async fn modify_plan(&self, ctx: &Context, req: &mut PlanRequest<'_>) {
        let mut plan = Plan { req, ty: self.ty() };
        self.inner.plan(ctx, &mut plan).await;
    }

    async fn create(&self, ctx: &Context, req: &ApplyRequest<'_>) -> ApplyResult {
        let outcome = match self.state(req.planned) {
            Ok(plan) => match self.call(ctx, plan.scope()).await {
                Ok(call) => self.inner.create(&call, plan).await,
                Err(d) => Outcome::failed(d),
            },
            Err(d) => Outcome::failed(d),
        };
        self.answer(outcome, &Value::Null)
    }

    async fn read(&self, ctx: &Context, state: &Value) -> Result<Option<Value>, Diagnostics> {
        let state = self.state(state)?;
        let call = self.call(ctx, state.scope()).await?;
        match self.inner.read(&call, state).await? {
            Some(m) => self.value(&m).map(Some),
            None => Ok(None),
        }
    }

    async fn update(&self, ctx: &Context, req: &ApplyRequest<'_>) -> ApplyResult {
        let outcome = match (self.state(req.prior), self.state(req.planned)) {
            (Ok(prior), Ok(plan)) => match self.call(ctx, prior.scope()).await {
                Ok(call) => self.inner.update(&call, prior, plan).await,
                Err(d) => Outcome::failed(d),
            },
            (Err(d), _) | (_, Err(d)) => Outcome::failed(d),
        };
        self.answer(outcome, req.prior)
    }

    async fn delete(&self, ctx: &Context, req: &ApplyRequest<'_>) -> Diagnostics {
        let prior = match self.state(req.prior) {
            Ok(m) => m,
            Err(d) => return d,
        };
        match self.call(ctx, prior.scope()).await {
            Ok(call) => self.inner.delete(&call, prior).await,
            Err(d) => d,
        }
    }

    async fn import(&self, ctx: &Context, id: &str) -> Result<Vec<ImportedResource>, Diagnostics> {
        let Some(importer) = self.importer.map(|of| of(&self.inner)) else {
            return Err(Diagnostics::from_error(
                "Import not supported",
                format!("{} cannot be imported.", R::TYPE_NAME),
            ));
        };
        let (scope, own) = split_scoped_id(id);
        let call = self.call(ctx, scope).await?;
        let found = importer.import(&call, own).await?;
        if found.is_empty() {
            return Err(Diagnostics::from_error(
                format!("Unable to import {}", R::TYPE_NAME),
                format!(
                    "{id:?} names nothing to import. Use {}.",
                    importer.id_format()
                ),
            ));
        }
        found
            .into_iter()
            .map(|mut m| {
                m.set_scope(scope);
                Ok(ImportedResource {
                    type_name: R::TYPE_NAME.to_string(),
                    state: self.value(&m)?,
                    private: Vec::new(),
                })
            })
            .collect()
    }
}
