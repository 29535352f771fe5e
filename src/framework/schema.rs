//! Declarative schemas: attributes and nested blocks with their behaviour (validators, plan
//! modifiers, defaults) declared on them, as `Attribute::string("url").optional().description(..)`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cty::{Type, Value};

use super::plan_modifier::{PlanModifier, RequiresReplace, UseStateForUnknown};
use super::validator::Validator;

/// A resource's, data source's or provider's schema: a version and a root block.
#[derive(Clone, Default)]
pub struct Schema {
    /// Bumped whenever the stored state's shape changes; see `Resource::upgrade_state`.
    pub version: i64,
    /// The root block.
    pub block: Block,
}

/// The value type of the schema `build` makes, computed once per process into `cell`: models
/// are decoded and encoded on every request, and building a schema (with its validators) is
/// far dearer than that.
pub fn memo_type(cell: &'static std::sync::OnceLock<Type>, build: fn() -> Schema) -> &'static Type {
    cell.get_or_init(|| build().value_type())
}

impl Schema {
    /// A version-0 schema with this root block.
    pub fn new(block: Block) -> Self {
        Self { version: 0, block }
    }

    /// The same schema with another version.
    pub fn version(mut self, version: i64) -> Self {
        self.version = version;
        self
    }

    /// The cty type of a value of this schema.
    pub fn value_type(&self) -> Type {
        self.block.value_type()
    }
}

/// A block: attributes and nested blocks.
#[derive(Clone, Default)]
pub struct Block {
    /// Attributes, in declaration order.
    pub attributes: Vec<Attribute>,
    /// Nested block types, in declaration order.
    pub blocks: Vec<NestedBlock>,
    /// Markdown description.
    pub description: String,
    /// Whether the whole block is deprecated.
    pub deprecated: bool,
}

impl Block {
    /// An empty block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an attribute.
    pub fn attribute(mut self, attribute: Attribute) -> Self {
        self.attributes.push(attribute);
        self
    }

    /// Adds a nested block type.
    pub fn block(mut self, block: NestedBlock) -> Self {
        self.blocks.push(block);
        self
    }

    /// Sets the markdown description.
    pub fn description(mut self, text: &str) -> Self {
        self.description = text.to_string();
        self
    }

    /// The attribute named `name`, if any.
    pub fn find_attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// The nested block type named `name`, if any.
    pub fn find_block(&self, name: &str) -> Option<&NestedBlock> {
        self.blocks.iter().find(|b| b.type_name == name)
    }

    /// The cty object type of a value of this block.
    pub fn value_type(&self) -> Type {
        let mut attrs = BTreeMap::new();
        for a in &self.attributes {
            attrs.insert(a.name.clone(), a.ty.clone());
        }
        for b in &self.blocks {
            attrs.insert(b.type_name.clone(), b.value_type());
        }
        Type::Object {
            attrs,
            optional: Default::default(),
        }
    }
}

/// How a nested block repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    /// At most one, as an object (null when absent).
    Single,
    /// An ordered list of blocks.
    List,
    /// An unordered set of blocks.
    Set,
    /// Blocks keyed by a label.
    Map,
}

/// A nested block type, e.g. `timeouts { ... }` or `disk { ... }`.
#[derive(Clone)]
pub struct NestedBlock {
    /// The block's name in HCL.
    pub type_name: String,
    /// Its content.
    pub block: Block,
    /// How it repeats.
    pub nesting: Nesting,
    /// Fewest blocks allowed (0 = optional).
    pub min_items: i64,
    /// Most blocks allowed (0 = no limit).
    pub max_items: i64,
}

impl NestedBlock {
    /// A nested block type.
    pub fn new(type_name: &str, nesting: Nesting, block: Block) -> Self {
        Self {
            type_name: type_name.to_string(),
            block,
            nesting,
            min_items: 0,
            max_items: 0,
        }
    }

    /// Sets the item limits.
    pub fn items(mut self, min: i64, max: i64) -> Self {
        self.min_items = min;
        self.max_items = max;
        self
    }

    /// The cty type of this block's value in its parent object.
    pub fn value_type(&self) -> Type {
        let inner = self.block.value_type();
        match self.nesting {
            Nesting::Single => inner,
            Nesting::List => Type::List(Box::new(inner)),
            Nesting::Set => Type::Set(Box::new(inner)),
            Nesting::Map => Type::Map(Box::new(inner)),
        }
    }

    /// The conventional `timeouts { create, read, update, delete }` block; each value is a
    /// duration string such as `"30s"`, `"10m"` or `"1h"`.
    pub fn timeouts(operations: &[&str]) -> Self {
        let mut block = Block::new().description(
            "Time limits for each operation, as durations like `\"30s\"`, `\"10m\"` or `\"1h\"`.",
        );
        for op in operations {
            block = block.attribute(
                Attribute::string(op)
                    .optional()
                    .validate(super::validator::duration())
                    .description(&format!("Time limit for {op}.")),
            );
        }
        Self::new("timeouts", Nesting::Single, block)
    }
}

/// One attribute, with everything Terraform and our plan pipeline need to know about it.
#[derive(Clone)]
pub struct Attribute {
    /// Name in HCL.
    pub name: String,
    /// Its cty type.
    pub ty: Type,
    /// Markdown description, shown in docs.
    pub description: String,
    /// Must be set in configuration.
    pub required: bool,
    /// May be set in configuration.
    pub optional: bool,
    /// The provider may set it.
    pub computed: bool,
    /// Never shown in plans or logs.
    pub sensitive: bool,
    /// Deprecated, with the message to show.
    pub deprecation: Option<String>,
    /// Checks on configured values.
    pub validators: Vec<Arc<dyn Validator>>,
    /// Plan behaviour.
    pub plan_modifiers: Vec<Arc<dyn PlanModifier>>,
    /// Value planned when configuration leaves it null (implies optional + computed).
    pub default: Option<Value>,
}

impl Attribute {
    /// A new attribute of type `ty`; neither required, optional nor computed until said.
    pub fn new(name: &str, ty: Type) -> Self {
        Self {
            name: name.to_string(),
            ty,
            description: String::new(),
            required: false,
            optional: false,
            computed: false,
            sensitive: false,
            deprecation: None,
            validators: Vec::new(),
            plan_modifiers: Vec::new(),
            default: None,
        }
    }

    /// A string attribute.
    pub fn string(name: &str) -> Self {
        Self::new(name, Type::String)
    }

    /// A number attribute.
    pub fn number(name: &str) -> Self {
        Self::new(name, Type::Number)
    }

    /// A bool attribute.
    pub fn bool(name: &str) -> Self {
        Self::new(name, Type::Bool)
    }

    /// Must be set in configuration.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// May be set in configuration.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Set by the provider.
    pub fn computed(mut self) -> Self {
        self.computed = true;
        self
    }

    /// Hidden from plans and logs.
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    /// Deprecated, with a message telling what to use instead.
    pub fn deprecated(mut self, message: &str) -> Self {
        self.deprecation = Some(message.to_string());
        self
    }

    /// Sets the markdown description.
    pub fn description(mut self, text: &str) -> Self {
        self.description = text.to_string();
        self
    }

    /// Adds a validator.
    pub fn validate(mut self, validator: Arc<dyn Validator>) -> Self {
        self.validators.push(validator);
        self
    }

    /// Adds a plan modifier.
    pub fn plan_modifier(mut self, modifier: Arc<dyn PlanModifier>) -> Self {
        self.plan_modifiers.push(modifier);
        self
    }

    /// Changing the value replaces the resource.
    pub fn requires_replace(self) -> Self {
        self.plan_modifier(Arc::new(RequiresReplace))
    }

    /// While unknown in a plan, keep the prior state's value (for values that never change
    /// after creation, such as ids).
    pub fn use_state_for_unknown(self) -> Self {
        self.plan_modifier(Arc::new(UseStateForUnknown))
    }

    /// The value planned when configuration leaves the attribute null.
    pub fn default_value(mut self, value: Value) -> Self {
        self.optional = true;
        self.computed = true;
        self.default = Some(value);
        self
    }

    /// The markdown sentences that validators, modifiers and the default add to the description,
    /// for generated docs.
    pub fn behaviour_notes(&self) -> Vec<String> {
        let mut notes: Vec<String> = self.validators.iter().map(|v| v.description()).collect();
        notes.extend(self.plan_modifiers.iter().map(|m| m.description()));
        if let Some(default) = &self.default {
            notes.push(format!("Defaults to `{}`.", default_display(default)));
        }
        notes.retain(|n| !n.is_empty());
        notes
    }
}

fn default_display(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}
