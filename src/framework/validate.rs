//! Configuration validation: runs every attribute's validators over a configuration value,
//! skipping null and unknown values (those are checked again when they become known).

use crate::cty::Value;

use super::diag::Diagnostics;
use super::path::AttrPath;
use super::schema::Block;
use super::walk::{attr, block_elements};

/// Runs the validators declared in `block` over `config`, reporting with attribute paths.
pub fn validate_config(block: &Block, config: &Value, path: &AttrPath, diags: &mut Diagnostics) {
    for a in &block.attributes {
        let value = attr(config, &a.name);
        let here = path.join_attr(&a.name);
        if matches!(value, Value::Null | Value::Unknown) {
            continue;
        }
        if let Some(message) = &a.deprecation {
            diags.attr_warning(here.clone(), "Deprecated attribute", message.clone());
        }
        for v in &a.validators {
            v.validate(value, &here, diags);
        }
    }
    for nested in &block.blocks {
        let here = path.join_attr(&nested.type_name);
        for (elem, value) in block_elements(nested, attr(config, &nested.type_name)) {
            validate_config(&nested.block, value, &elem.extend(&here), diags);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::schema::{Attribute, NestedBlock, Nesting};
    use crate::framework::validator::one_of;
    use std::collections::BTreeMap;

    #[test]
    fn reports_nested_paths() {
        let block = Block::new().block(NestedBlock::new(
            "disk",
            Nesting::List,
            Block::new().attribute(
                Attribute::string("mode")
                    .optional()
                    .validate(one_of(&["thin"])),
            ),
        ));
        let disk = |m: &str| {
            Value::Object(BTreeMap::from([(
                "mode".to_string(),
                Value::String(m.into()),
            )]))
        };
        let config = Value::Object(BTreeMap::from([(
            "disk".to_string(),
            Value::List(vec![disk("thin"), disk("thick")]),
        )]));
        let mut diags = Diagnostics::new();
        validate_config(&block, &config, &AttrPath::root(), &mut diags);
        assert_eq!(diags.0.len(), 1);
        assert_eq!(
            diags.0[0].path.as_ref().unwrap().to_string(),
            "disk[1].mode"
        );
    }
}
