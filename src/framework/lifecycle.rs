//! What Terraform's resource RPCs mean, decided once for every resource: a plan runs the
//! attribute pipeline and then the resource's hook; an apply is a create, an update or a delete
//! (a failed delete keeps the prior state, so the object stays tracked; state left unknown is a
//! bug reported as such); a read of a vanished object is null; stored state is upgraded from
//! older schema versions or loaded with attributes since removed dropped.
//!
//! The protocol layer only decodes a request, calls one function here and encodes the answer.

use crate::cty::{self, Type, Value};

use super::diag::Diagnostics;
use super::path::AttrPath;
use super::plan::{normalise_replace, plan_attributes};
use super::resource::{ApplyRequest, Context, PlanRequest, Resource};
use super::schema::{Block, Nesting, Schema};

/// A resource type with its schema and value type computed once.
pub struct ResourceType<'a> {
    /// The resource.
    pub resource: &'a dyn Resource,
    /// Its schema.
    pub schema: &'a Schema,
    /// The schema's value type.
    pub ty: &'a Type,
}

/// A planned change.
pub struct Planned {
    /// The planned new state (null when destroying).
    pub state: Value,
    /// Attributes whose change replaces the object.
    pub requires_replace: Vec<AttrPath>,
    /// Errors and warnings.
    pub diags: Diagnostics,
}

/// Plans a change: defaults, unknowns and attribute modifiers, then the resource's hook, then
/// the replacement paths narrowed to those whose value really changes.
pub async fn plan(
    r: &ResourceType<'_>,
    ctx: &Context,
    prior: &Value,
    proposed: &Value,
    config: &Value,
) -> Planned {
    let attr_plan = plan_attributes(r.schema, prior, proposed, config);
    if attr_plan.planned == Value::Null {
        return Planned {
            state: Value::Null,
            requires_replace: Vec::new(),
            diags: Diagnostics::new(),
        };
    }
    let mut hook = PlanRequest {
        prior,
        config,
        planned: attr_plan.planned,
        requires_replace: attr_plan.requires_replace,
        diags: Diagnostics::new(),
    };
    r.resource.modify_plan(ctx, &mut hook).await;
    Planned {
        requires_replace: normalise_replace(hook.requires_replace, prior, &hook.planned),
        state: hook.planned,
        diags: hook.diags,
    }
}

/// An applied change.
pub struct Applied {
    /// The new state: what exists now.
    pub state: Value,
    /// New private state; `None` keeps the planned one.
    pub private: Option<Vec<u8>>,
    /// Errors and warnings.
    pub diags: Diagnostics,
}

/// Applies a planned change: deletes when the plan is null, creates when the prior state is,
/// updates otherwise.
pub async fn apply(
    r: &ResourceType<'_>,
    ctx: &Context,
    req: &ApplyRequest<'_>,
    type_name: &str,
) -> Applied {
    let mut applied = if *req.planned == Value::Null {
        let diags = r.resource.delete(ctx, req).await;
        // A failed delete keeps the prior state so Terraform still tracks the object.
        let state = if diags.has_errors() {
            req.prior.clone()
        } else {
            Value::Null
        };
        Applied {
            state,
            private: None,
            diags,
        }
    } else {
        let result = if *req.prior == Value::Null {
            r.resource.create(ctx, req).await
        } else {
            r.resource.update(ctx, req).await
        };
        Applied {
            state: result.state,
            private: result.private,
            diags: result.diags,
        }
    };
    if !applied.state.is_wholly_known() {
        applied.diags.error(
            "Provider returned an incomplete state",
            format!("{type_name} left values unknown after apply; this is a bug in ceso."),
        );
    }
    applied
}

/// Reads the object; null when it no longer exists.
pub async fn read(
    r: &ResourceType<'_>,
    ctx: &Context,
    state: &Value,
) -> Result<Value, Diagnostics> {
    Ok(r.resource.read(ctx, state).await?.unwrap_or(Value::Null))
}

/// Loads stored state written by schema `version` (JSON; `None` when there is none).
pub fn upgrade(
    r: &ResourceType<'_>,
    type_name: &str,
    version: i64,
    json: Option<serde_json::Value>,
) -> Result<Value, Diagnostics> {
    let Some(json) = json else {
        return Ok(Value::Null);
    };
    if version == r.schema.version {
        let pruned = prune_removed_attributes(json, &r.schema.block);
        let bytes = serde_json::to_vec(&pruned).expect("JSON re-encodes");
        return cty::from_json(&bytes, r.ty)
            .map_err(|e| Diagnostics::from_error("Unable to read stored state", e.to_string()));
    }
    if version > r.schema.version {
        return Err(Diagnostics::from_error(
            "State from a newer provider",
            format!(
                "The state of this {type_name} was written by schema version {version}, newer than this ceso's {}; upgrade ceso.",
                r.schema.version
            ),
        ));
    }
    r.resource.upgrade_state(version, json)
}

/// Drops attributes the schema no longer has from stored JSON state (recursively through
/// nested blocks), so state written before an attribute was removed still loads.
fn prune_removed_attributes(json: serde_json::Value, block: &Block) -> serde_json::Value {
    let serde_json::Value::Object(map) = json else {
        return json;
    };
    let mut out = serde_json::Map::new();
    for (k, v) in map {
        if block.find_attribute(&k).is_some() {
            out.insert(k, v);
        } else if let Some(nested) = block.find_block(&k) {
            let v = match (nested.nesting, v) {
                (Nesting::Single, v) => prune_removed_attributes(v, &nested.block),
                (Nesting::List | Nesting::Set, serde_json::Value::Array(items)) => {
                    serde_json::Value::Array(
                        items
                            .into_iter()
                            .map(|i| prune_removed_attributes(i, &nested.block))
                            .collect(),
                    )
                }
                (Nesting::Map, serde_json::Value::Object(items)) => serde_json::Value::Object(
                    items
                        .into_iter()
                        .map(|(k, i)| (k, prune_removed_attributes(i, &nested.block)))
                        .collect(),
                ),
                (_, other) => other,
            };
            out.insert(k, v);
        }
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::framework::resource::ApplyResult;
    use crate::framework::schema::Attribute;

    /// A resource whose delete fails and whose create leaves `id` unknown when asked to.
    #[derive(Default)]
    struct Fake {
        fail_delete: bool,
        leave_unknown: bool,
        hooked: AtomicBool,
    }

    fn schema() -> Schema {
        Schema::new(
            Block::new()
                .attribute(Attribute::string("id").computed())
                .attribute(Attribute::string("name").required().requires_replace()),
        )
        .version(1)
    }

    fn obj(id: Value, name: &str) -> Value {
        Value::Object(
            [
                ("id".to_string(), id),
                ("name".to_string(), Value::string(name)),
            ]
            .into_iter()
            .collect(),
        )
    }

    #[async_trait]
    impl Resource for Fake {
        fn type_name(&self) -> &'static str {
            "fake"
        }
        fn schema(&self) -> Schema {
            schema()
        }
        async fn modify_plan(&self, _ctx: &Context, _req: &mut PlanRequest<'_>) {
            self.hooked.store(true, Ordering::SeqCst);
        }
        async fn create(&self, _ctx: &Context, req: &ApplyRequest<'_>) -> ApplyResult {
            let id = if self.leave_unknown {
                Value::Unknown
            } else {
                Value::string("1")
            };
            let name = match crate::framework::typed::get_attr(req.planned, "name") {
                Value::String(s) => s.clone(),
                _ => String::new(),
            };
            ApplyResult::ok(obj(id, &name))
        }
        async fn read(&self, _ctx: &Context, _state: &Value) -> Result<Option<Value>, Diagnostics> {
            Ok(None)
        }
        async fn update(&self, _ctx: &Context, req: &ApplyRequest<'_>) -> ApplyResult {
            ApplyResult::ok(req.planned.clone())
        }
        async fn delete(&self, _ctx: &Context, _req: &ApplyRequest<'_>) -> Diagnostics {
            if self.fail_delete {
                Diagnostics::from_error("nope", "")
            } else {
                Diagnostics::new()
            }
        }
    }

    fn with<T>(fake: &Fake, f: impl FnOnce(&ResourceType<'_>) -> T) -> T {
        let schema = schema();
        let ty = schema.value_type();
        f(&ResourceType {
            resource: fake,
            schema: &schema,
            ty: &ty,
        })
    }

    async fn apply_of(fake: &Fake, prior: Value, planned: Value) -> Applied {
        let schema = schema();
        let ty = schema.value_type();
        let r = ResourceType {
            resource: fake,
            schema: &schema,
            ty: &ty,
        };
        let config = planned.clone();
        let req = ApplyRequest {
            prior: &prior,
            planned: &planned,
            config: &config,
            private: &[],
        };
        apply(&r, &Context::default(), &req, "fake").await
    }

    #[tokio::test]
    async fn a_failed_delete_keeps_the_prior_state() {
        let prior = obj(Value::string("1"), "a");
        let fake = Fake {
            fail_delete: true,
            ..Fake::default()
        };
        let a = apply_of(&fake, prior.clone(), Value::Null).await;
        assert!(a.diags.has_errors());
        assert_eq!(a.state, prior);
        let a = apply_of(&Fake::default(), prior, Value::Null).await;
        assert_eq!(a.state, Value::Null);
        assert!(!a.diags.has_errors());
    }

    #[tokio::test]
    async fn state_left_unknown_is_an_error() {
        let fake = Fake {
            leave_unknown: true,
            ..Fake::default()
        };
        let a = apply_of(&fake, Value::Null, obj(Value::Unknown, "a")).await;
        assert!(a.diags.has_errors(), "{}", a.diags);
        let a = apply_of(&Fake::default(), Value::Null, obj(Value::Unknown, "a")).await;
        assert_eq!(a.state, obj(Value::string("1"), "a"));
    }

    #[tokio::test]
    async fn plan_runs_the_hook_and_keeps_only_real_replacements() {
        let fake = Fake::default();
        let schema = schema();
        let ty = schema.value_type();
        let r = ResourceType {
            resource: &fake,
            schema: &schema,
            ty: &ty,
        };
        let prior = obj(Value::string("1"), "a");
        let ctx = Context::default();
        let same = plan(
            &r,
            &ctx,
            &prior,
            &obj(Value::Null, "a"),
            &obj(Value::Null, "a"),
        )
        .await;
        assert!(fake.hooked.load(Ordering::SeqCst));
        assert!(same.requires_replace.is_empty());
        let renamed = plan(
            &r,
            &ctx,
            &prior,
            &obj(Value::Null, "b"),
            &obj(Value::Null, "b"),
        )
        .await;
        assert_eq!(renamed.requires_replace, vec![AttrPath::attr("name")]);
        let destroy = plan(&r, &ctx, &prior, &Value::Null, &Value::Null).await;
        assert_eq!(destroy.state, Value::Null);
    }

    #[test]
    fn stored_state_loads_without_removed_attributes_and_refuses_newer_versions() {
        let fake = Fake::default();
        with(&fake, |r| {
            let json = serde_json::json!({"id": "1", "name": "a", "gone": true});
            let v = upgrade(r, "fake", 1, Some(json.clone())).unwrap();
            assert_eq!(v, obj(Value::string("1"), "a"));
            let e = upgrade(r, "fake", 2, Some(json.clone())).unwrap_err();
            assert!(e.to_string().contains("newer"), "{e}");
            assert!(upgrade(r, "fake", 0, Some(json)).is_err());
            assert_eq!(upgrade(r, "fake", 1, None).unwrap(), Value::Null);
        });
    }
}
