//! The plan pipeline, in a fixed order: defaults, then computed-and-unset values marked unknown
//! (only where the resource changes at all, so an unchanged resource plans as a no-op), then
//! the attributes' own plan modifiers; the resource's hook runs after this (see the protocol's
//! PlanResourceChange), and last `normalise_replace` keeps only replace paths that really change.

use crate::cty::Value;

use super::path::{AttrPath, Step};
use super::plan_modifier::{AttrPlanRequest, AttrPlanResponse};
use super::schema::{Block, Nesting, Schema};
use super::walk::{attr, block_elements, set_attr, set_block_element, NULL};

/// The result of the attribute-level planning steps.
pub struct AttrPlan {
    /// The planned new state.
    pub planned: Value,
    /// Attributes whose change forces replacement.
    pub requires_replace: Vec<AttrPath>,
}

/// Plans `proposed` (Terraform's merge of configuration and prior state) for a resource.
pub fn plan_attributes(
    schema: &Schema,
    prior: &Value,
    proposed: &Value,
    config: &Value,
) -> AttrPlan {
    if *proposed == Value::Null {
        return AttrPlan {
            planned: Value::Null,
            requires_replace: Vec::new(),
        };
    }
    let creating = *prior == Value::Null;
    let mut planned = proposed.clone();
    apply_defaults(&schema.block, &mut planned, config);
    let changed = creating || planned != *prior;
    let mut requires_replace = Vec::new();
    let mut walk = PlanWalk {
        changed,
        requires_replace: &mut requires_replace,
    };
    walk.block(
        &schema.block,
        &mut planned,
        config,
        prior,
        &AttrPath::root(),
        creating,
    );
    AttrPlan {
        planned,
        requires_replace,
    }
}

/// Drops duplicate replace paths and those whose planned value equals the prior value.
pub fn normalise_replace(paths: Vec<AttrPath>, prior: &Value, planned: &Value) -> Vec<AttrPath> {
    if *prior == Value::Null || *planned == Value::Null {
        return Vec::new();
    }
    let mut out: Vec<AttrPath> = Vec::new();
    for p in paths {
        if value_at(prior, &p) != value_at(planned, &p) && !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The value at `path` inside `value`, or null.
pub fn value_at<'a>(value: &'a Value, path: &AttrPath) -> &'a Value {
    let mut cur = value;
    for step in &path.0 {
        cur = match (step, cur) {
            (Step::Attr(name), v) => attr(v, name),
            (Step::Index(i), Value::List(items) | Value::Tuple(items) | Value::Set(items)) => {
                usize::try_from(*i)
                    .ok()
                    .and_then(|i| items.get(i))
                    .unwrap_or(&NULL)
            }
            (Step::Key(k), Value::Map(items)) => items.get(k).unwrap_or(&NULL),
            _ => &NULL,
        };
    }
    cur
}

fn apply_defaults(block: &Block, planned: &mut Value, config: &Value) {
    for a in &block.attributes {
        if let Some(default) = &a.default {
            if *attr(config, &a.name) == Value::Null {
                set_attr(planned, &a.name, default.clone());
            }
        }
    }
    for nested in &block.blocks {
        let mut value = attr(planned, &nested.type_name).clone();
        let cfg = attr(config, &nested.type_name);
        let elems: Vec<_> = block_elements(nested, &value)
            .into_iter()
            .map(|(e, v)| (e, v.clone()))
            .collect();
        for (elem, mut v) in elems {
            apply_defaults(&nested.block, &mut v, elem.lookup(nested, cfg));
            set_block_element(&mut value, &elem, v);
        }
        set_attr(planned, &nested.type_name, value);
    }
}

struct PlanWalk<'r> {
    changed: bool,
    requires_replace: &'r mut Vec<AttrPath>,
}

impl PlanWalk<'_> {
    fn block(
        &mut self,
        block: &Block,
        planned: &mut Value,
        config: &Value,
        prior: &Value,
        path: &AttrPath,
        creating: bool,
    ) {
        for a in &block.attributes {
            let here = path.join_attr(&a.name);
            let cfg = attr(config, &a.name);
            let before = attr(prior, &a.name);
            let mut value = attr(planned, &a.name).clone();
            if a.computed
                && a.default.is_none()
                && *cfg == Value::Null
                && (creating || self.changed)
            {
                value = Value::Unknown;
            }
            let mut resp = AttrPlanResponse {
                planned: value,
                requires_replace: false,
            };
            let req = AttrPlanRequest {
                path: &here,
                config: cfg,
                prior: before,
                creating,
            };
            for m in &a.plan_modifiers {
                m.modify(&req, &mut resp);
            }
            if resp.requires_replace {
                self.requires_replace.push(here);
            }
            set_attr(planned, &a.name, resp.planned);
        }
        for nested in &block.blocks {
            let here = path.join_attr(&nested.type_name);
            let mut value = attr(planned, &nested.type_name).clone();
            let cfg = attr(config, &nested.type_name);
            let before = attr(prior, &nested.type_name);
            let elems: Vec<_> = block_elements(nested, &value)
                .into_iter()
                .map(|(e, v)| (e, v.clone()))
                .collect();
            for (elem, mut v) in elems {
                let (cfg_elem, prior_elem) = if nested.nesting == Nesting::Set {
                    // Set elements have no identity but their value: an element equal to a
                    // prior element is unchanged; any other is new.
                    let old = match before {
                        Value::Set(items) if items.contains(&v) => v.clone(),
                        _ => Value::Null,
                    };
                    (v.clone(), old)
                } else {
                    (
                        elem.lookup(nested, cfg).clone(),
                        elem.lookup(nested, before).clone(),
                    )
                };
                let elem_creating = creating || prior_elem == Value::Null;
                self.block(
                    &nested.block,
                    &mut v,
                    &cfg_elem,
                    &prior_elem,
                    &elem.extend(&here),
                    elem_creating,
                );
                set_block_element(&mut value, &elem, v);
            }
            set_attr(planned, &nested.type_name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::schema::{Attribute, Schema};
    use std::collections::BTreeMap;

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

    fn schema() -> Schema {
        Schema::new(
            Block::new()
                .attribute(Attribute::string("id").computed().use_state_for_unknown())
                .attribute(Attribute::string("name").required().requires_replace())
                .attribute(Attribute::string("note").optional())
                .attribute(Attribute::string("mode").default_value(s("thin")))
                .attribute(Attribute::string("moid").computed()),
        )
    }

    #[test]
    fn create_marks_computed_unknown_and_applies_defaults() {
        let config = obj(&[
            ("name", s("a")),
            ("note", Value::Null),
            ("mode", Value::Null),
            ("id", Value::Null),
            ("moid", Value::Null),
        ]);
        let plan = plan_attributes(&schema(), &Value::Null, &config, &config);
        assert_eq!(attr(&plan.planned, "id"), &Value::Unknown);
        assert_eq!(attr(&plan.planned, "moid"), &Value::Unknown);
        assert_eq!(attr(&plan.planned, "mode"), &s("thin"));
        assert!(plan.requires_replace.is_empty());
    }

    #[test]
    fn unchanged_resource_plans_no_op() {
        let prior = obj(&[
            ("name", s("a")),
            ("note", Value::Null),
            ("mode", s("thin")),
            ("id", s("x")),
            ("moid", s("vm-1")),
        ]);
        let config = obj(&[
            ("name", s("a")),
            ("note", Value::Null),
            ("mode", Value::Null),
            ("id", Value::Null),
            ("moid", Value::Null),
        ]);
        let plan = plan_attributes(&schema(), &prior, &prior, &config);
        assert_eq!(plan.planned, prior);
    }

    #[test]
    fn update_keeps_ids_and_unknowns_other_computed() {
        let prior = obj(&[
            ("name", s("a")),
            ("note", Value::Null),
            ("mode", s("thin")),
            ("id", s("x")),
            ("moid", s("vm-1")),
        ]);
        let config = obj(&[
            ("name", s("a")),
            ("note", s("hi")),
            ("mode", Value::Null),
            ("id", Value::Null),
            ("moid", Value::Null),
        ]);
        let proposed = obj(&[
            ("name", s("a")),
            ("note", s("hi")),
            ("mode", s("thin")),
            ("id", s("x")),
            ("moid", s("vm-1")),
        ]);
        let plan = plan_attributes(&schema(), &prior, &proposed, &config);
        assert_eq!(attr(&plan.planned, "id"), &s("x"));
        assert_eq!(attr(&plan.planned, "moid"), &Value::Unknown);
    }

    #[test]
    fn replace_only_where_value_changes() {
        let prior = obj(&[
            ("name", s("a")),
            ("note", Value::Null),
            ("mode", s("thin")),
            ("id", s("x")),
            ("moid", s("vm-1")),
        ]);
        let config = obj(&[
            ("name", s("b")),
            ("note", Value::Null),
            ("mode", Value::Null),
            ("id", Value::Null),
            ("moid", Value::Null),
        ]);
        let proposed = obj(&[
            ("name", s("b")),
            ("note", Value::Null),
            ("mode", s("thin")),
            ("id", s("x")),
            ("moid", s("vm-1")),
        ]);
        let plan = plan_attributes(&schema(), &prior, &proposed, &config);
        let rr = normalise_replace(plan.requires_replace, &prior, &plan.planned);
        assert_eq!(rr, vec![AttrPath::attr("name")]);
    }

    #[test]
    fn destroy_plans_null() {
        let prior = obj(&[("name", s("a"))]);
        let plan = plan_attributes(&schema(), &prior, &Value::Null, &Value::Null);
        assert_eq!(plan.planned, Value::Null);
    }
}
