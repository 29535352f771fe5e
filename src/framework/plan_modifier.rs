//! Plan modifiers declared on attributes: they adjust one attribute's planned value or mark the
//! resource for replacement, and describe themselves for the docs.

use crate::cty::Value;

use super::path::AttrPath;

/// What a plan modifier sees of one attribute.
pub struct AttrPlanRequest<'a> {
    /// Where the attribute is.
    pub path: &'a AttrPath,
    /// The configured value (null when unset).
    pub config: &'a Value,
    /// The prior state's value (null on create).
    pub prior: &'a Value,
    /// Whether the resource is being created.
    pub creating: bool,
}

/// What a plan modifier may change.
pub struct AttrPlanResponse {
    /// The planned value so far; the modifier may replace it.
    pub planned: Value,
    /// Set to force replacement of the resource.
    pub requires_replace: bool,
}

/// A rule that shapes an attribute's planned value.
pub trait PlanModifier: Send + Sync {
    /// Markdown sentence for the docs.
    fn description(&self) -> String;
    /// Adjusts `resp` for the attribute described by `req`.
    fn modify(&self, req: &AttrPlanRequest<'_>, resp: &mut AttrPlanResponse);
}

/// Changing the attribute on an existing resource replaces the resource.
pub struct RequiresReplace;

impl PlanModifier for RequiresReplace {
    fn description(&self) -> String {
        "Changing this forces a new resource to be created.".to_string()
    }

    fn modify(&self, req: &AttrPlanRequest<'_>, resp: &mut AttrPlanResponse) {
        if !req.creating && resp.planned != *req.prior {
            resp.requires_replace = true;
        }
    }
}

/// A computed value that is unknown in the plan keeps the prior state's value: for values that
/// are set once at creation (ids, UUIDs) so updates don't show them as "(known after apply)".
pub struct UseStateForUnknown;

impl PlanModifier for UseStateForUnknown {
    fn description(&self) -> String {
        String::new()
    }

    fn modify(&self, req: &AttrPlanRequest<'_>, resp: &mut AttrPlanResponse) {
        if !req.creating
            && resp.planned == Value::Unknown
            && *req.config == Value::Null
            && *req.prior != Value::Null
        {
            resp.planned = req.prior.clone();
        }
    }
}
