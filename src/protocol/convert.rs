//! Conversions between the framework's types and tfplugin5's wire types: schemas, diagnostics,
//! attribute paths and dynamic values.

use crate::cty::{self, Type, Value};
use crate::framework::path::Step;
use crate::framework::schema::{Attribute, Block, NestedBlock, Nesting};
use crate::framework::{AttrPath, Diagnostics, Schema, Severity};

use super::proto::tfplugin5 as pb;

/// A framework schema as tfplugin5 sends it.
pub fn schema_to_proto(schema: &Schema) -> pb::Schema {
    pb::Schema {
        version: schema.version,
        block: Some(block_to_proto(&schema.block, schema.version)),
    }
}

fn block_to_proto(block: &Block, version: i64) -> pb::schema::Block {
    pb::schema::Block {
        version,
        attributes: block.attributes.iter().map(attribute_to_proto).collect(),
        block_types: block.blocks.iter().map(nested_to_proto).collect(),
        description: block.description.clone(),
        description_kind: pb::StringKind::Markdown as i32,
        deprecated: block.deprecated,
        deprecation_message: String::new(),
    }
}

fn attribute_to_proto(a: &Attribute) -> pb::schema::Attribute {
    let mut description = a.description.clone();
    for note in a.behaviour_notes() {
        if !description.is_empty() {
            description.push(' ');
        }
        description.push_str(&note);
    }
    pb::schema::Attribute {
        name: a.name.clone(),
        r#type: a.ty.to_json_bytes(),
        description,
        required: a.required,
        optional: a.optional,
        computed: a.computed,
        sensitive: a.sensitive,
        description_kind: pb::StringKind::Markdown as i32,
        deprecated: a.deprecation.is_some(),
        write_only: false,
        deprecation_message: a.deprecation.clone().unwrap_or_default(),
    }
}

fn nested_to_proto(b: &NestedBlock) -> pb::schema::NestedBlock {
    use pb::schema::nested_block::NestingMode;
    let nesting = match b.nesting {
        Nesting::Single => NestingMode::Single,
        Nesting::List => NestingMode::List,
        Nesting::Set => NestingMode::Set,
        Nesting::Map => NestingMode::Map,
    };
    pb::schema::NestedBlock {
        type_name: b.type_name.clone(),
        block: Some(block_to_proto(&b.block, 0)),
        nesting: nesting as i32,
        min_items: b.min_items,
        max_items: b.max_items,
    }
}

/// Framework diagnostics as tfplugin5 sends them.
pub fn diags_to_proto(diags: &Diagnostics) -> Vec<pb::Diagnostic> {
    diags
        .0
        .iter()
        .map(|d| pb::Diagnostic {
            severity: match d.severity {
                Severity::Error => pb::diagnostic::Severity::Error as i32,
                Severity::Warning => pb::diagnostic::Severity::Warning as i32,
            },
            summary: d.summary.clone(),
            detail: d.detail.clone(),
            attribute: d.path.as_ref().filter(|p| !p.is_root()).map(path_to_proto),
        })
        .collect()
}

/// An attribute path as tfplugin5 sends it.
pub fn path_to_proto(path: &AttrPath) -> pb::AttributePath {
    use pb::attribute_path::step::Selector;
    pb::AttributePath {
        steps: path
            .0
            .iter()
            .map(|s| pb::attribute_path::Step {
                selector: Some(match s {
                    Step::Attr(n) => Selector::AttributeName(n.clone()),
                    Step::Key(k) => Selector::ElementKeyString(k.clone()),
                    Step::Index(i) => Selector::ElementKeyInt(*i),
                }),
            })
            .collect(),
    }
}

/// Decodes a dynamic value of type `ty` (msgpack preferred, JSON accepted, absent = null).
pub fn decode(
    value: Option<&pb::DynamicValue>,
    ty: &Type,
    what: &str,
) -> Result<Value, Diagnostics> {
    let Some(v) = value else {
        return Ok(Value::Null);
    };
    let result = if !v.msgpack.is_empty() {
        cty::from_msgpack(&v.msgpack, ty)
    } else if !v.json.is_empty() {
        cty::from_json(&v.json, ty)
    } else {
        return Ok(Value::Null);
    };
    result.map_err(|e| {
        Diagnostics::from_error(
            format!("Unable to decode {what}"),
            format!("Terraform sent a value that does not fit the schema: {e}"),
        )
    })
}

/// Encodes a value of type `ty` as msgpack.
pub fn encode(value: &Value, ty: &Type, what: &str) -> Result<pb::DynamicValue, Diagnostics> {
    cty::to_msgpack(value, ty)
        .map(|msgpack| pb::DynamicValue {
            msgpack,
            json: Vec::new(),
        })
        .map_err(|e| {
            Diagnostics::from_error(
                format!("Unable to encode {what}"),
                format!("The provider produced a value that does not fit its schema (a bug in ceso): {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::schema::Attribute;

    #[test]
    fn schema_carries_behaviour_notes_in_descriptions() {
        let schema = Schema::new(
            Block::new().attribute(
                Attribute::string("firmware")
                    .optional()
                    .description("Boot firmware.")
                    .validate(crate::framework::validator::one_of(&["bios", "efi"])),
            ),
        );
        let pb = schema_to_proto(&schema);
        let a = &pb.block.unwrap().attributes[0];
        assert_eq!(
            a.description,
            "Boot firmware. Must be one of `bios`, `efi`."
        );
        assert_eq!(a.r#type, b"\"string\"");
    }

    #[test]
    fn paths_become_steps() {
        let p = path_to_proto(&AttrPath::attr("disk").join_index(2).join_attr("size_gb"));
        assert_eq!(p.steps.len(), 3);
    }
}
