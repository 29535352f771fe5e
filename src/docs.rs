//! Registry documentation generated from the provider itself: each page is a template from
//! `templates/` with the schema (descriptions, validators' and modifiers' notes) and the files
//! of `examples/` filled in, written to `docs/` in the Terraform Registry layout.
//!
//! Placeholders in templates: `{{name}}` (type name), `{{description}}` (the schema's),
//! `{{example}}` (the main example file), `{{example_file:PATH}}` (any other example file),
//! `{{import}}` (`import.sh`, for resources),
//! `{{schema}}` (the generated attribute reference).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::framework::{Attribute, Block, NestedBlock, Nesting, Provider};

/// What can go wrong rendering docs.
#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    /// A template or example is missing or unreadable.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One rendered page: where it goes and what it says.
pub struct Page {
    /// Path relative to the docs directory, e.g. `data-sources/endpoint.md`.
    pub path: PathBuf,
    /// Markdown.
    pub content: String,
}

fn read(path: &Path) -> Result<String, DocsError> {
    std::fs::read_to_string(path).map_err(|source| DocsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Renders every page of `provider`, reading `templates/` and `examples/` under `root`.
pub fn render(provider: &dyn Provider, root: &Path) -> Result<Vec<Page>, DocsError> {
    let prefix = format!("{}_", provider.type_name());
    let mut pages = Vec::new();
    let schema = provider.schema();
    pages.push(page(
        root,
        "index.md",
        "templates/index.md.tmpl",
        provider.type_name(),
        &schema.block,
        "examples/provider/provider.tf",
        None,
    )?);
    let mut data_sources = provider.data_sources();
    data_sources.sort_by_key(|d| d.type_name());
    for d in data_sources {
        let name = d.type_name();
        let short = name.strip_prefix(&prefix).unwrap_or(name);
        pages.push(page(
            root,
            &format!("data-sources/{short}.md"),
            &format!("templates/data-sources/{short}.md.tmpl"),
            name,
            &d.schema().block,
            &format!("examples/data-sources/{name}/data-source.tf"),
            None,
        )?);
    }
    let mut resources = provider.resources();
    resources.sort_by_key(|r| r.type_name());
    for r in resources {
        let name = r.type_name();
        let short = name.strip_prefix(&prefix).unwrap_or(name);
        pages.push(page(
            root,
            &format!("resources/{short}.md"),
            &format!("templates/resources/{short}.md.tmpl"),
            name,
            &r.schema().block,
            &format!("examples/resources/{name}/resource.tf"),
            Some(&format!("examples/resources/{name}/import.sh")),
        )?);
    }
    Ok(pages)
}

fn page(
    root: &Path,
    out: &str,
    template: &str,
    name: &str,
    block: &Block,
    example: &str,
    import: Option<&str>,
) -> Result<Page, DocsError> {
    let mut content = read(&root.join(template))?
        .replace("{{name}}", name)
        .replace("{{description}}", block.description.trim())
        .replace("{{schema}}", schema_markdown(block).trim_end());
    if content.contains("{{example}}") {
        let text = read(&root.join(example))?;
        content = content.replace(
            "{{example}}",
            &format!("```terraform\n{}\n```", text.trim_end()),
        );
    }
    // `{{example_file:examples/...}}`: another example file, e.g. a second scenario.
    while let Some(start) = content.find("{{example_file:") {
        let Some(len) = content[start..].find("}}") else {
            break;
        };
        let path = content[start + "{{example_file:".len()..start + len].to_string();
        let text = read(&root.join(&path))?;
        content.replace_range(
            start..start + len + 2,
            &format!("```terraform\n{}\n```", text.trim_end()),
        );
    }
    if let Some(import) = import.filter(|_| content.contains("{{import}}")) {
        let text = read(&root.join(import))?;
        content = content.replace("{{import}}", &format!("```shell\n{}\n```", text.trim_end()));
    }
    Ok(Page {
        path: PathBuf::from(out),
        content,
    })
}

/// The attribute reference of a block: required, optional, read-only, then nested blocks.
pub fn schema_markdown(block: &Block) -> String {
    let mut out = String::from("## Schema\n");
    write_block(&mut out, block, "");
    out
}

fn write_block(out: &mut String, block: &Block, anchor: &str) {
    type Keep = fn(&Attribute) -> bool;
    let groups: [(&str, Keep); 3] = [
        ("Required", |a| a.required),
        ("Optional", |a| a.optional),
        ("Read-Only", |a| a.computed && !a.optional && !a.required),
    ];
    for (title, keep) in groups {
        let attrs: Vec<&Attribute> = block.attributes.iter().filter(|a| keep(a)).collect();
        let blocks: Vec<&NestedBlock> = if title == "Optional" {
            block.blocks.iter().filter(|b| b.min_items == 0).collect()
        } else if title == "Required" {
            block.blocks.iter().filter(|b| b.min_items > 0).collect()
        } else {
            Vec::new()
        };
        if attrs.is_empty() && blocks.is_empty() {
            continue;
        }
        let _ = write!(out, "\n### {title}\n\n");
        for a in attrs {
            let _ = writeln!(
                out,
                "- `{}` ({}){} {}",
                a.name,
                type_label(a),
                if a.sensitive { ", Sensitive" } else { "" },
                attribute_text(a)
            );
        }
        for b in blocks {
            let _ = writeln!(
                out,
                "- `{}` (Block {}) {} (see [below for nested schema](#nestedblock--{anchor}{}))",
                b.type_name,
                nesting_label(b),
                b.block.description.trim(),
                b.type_name
            );
        }
    }
    for b in &block.blocks {
        let _ = write!(
            out,
            "\n<a id=\"nestedblock--{anchor}{}\"></a>\n### Nested Schema for `{anchor}{}`\n",
            b.type_name, b.type_name
        );
        write_block(out, &b.block, &format!("{anchor}{}--", b.type_name));
    }
}

fn attribute_text(a: &Attribute) -> String {
    let mut parts = vec![a.description.trim().to_string()];
    parts.extend(a.behaviour_notes());
    if let Some(d) = &a.deprecation {
        parts.push(format!("**Deprecated:** {d}"));
    }
    parts.retain(|p| !p.is_empty());
    parts.join(" ")
}

fn type_label(a: &Attribute) -> String {
    use crate::cty::Type;
    fn label(t: &Type) -> String {
        match t {
            Type::String => "String".into(),
            Type::Number => "Number".into(),
            Type::Bool => "Boolean".into(),
            Type::Dynamic => "Dynamic".into(),
            Type::List(e) => format!("List of {}", label(e)),
            Type::Set(e) => format!("Set of {}", label(e)),
            Type::Map(e) => format!("Map of {}", label(e)),
            Type::Object { .. } => "Object".into(),
            Type::Tuple(_) => "Tuple".into(),
        }
    }
    label(&a.ty)
}

fn nesting_label(b: &NestedBlock) -> String {
    let kind = match b.nesting {
        Nesting::Single => "",
        Nesting::List => "List",
        Nesting::Set => "Set",
        Nesting::Map => "Map",
    };
    match (kind, b.max_items) {
        ("", _) => "".to_string(),
        (k, 0) => format!(", {k}"),
        (k, max) => format!(", {k}, Max: {max}"),
    }
    .trim_start_matches(", ")
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::validator::one_of;

    #[test]
    fn groups_attributes_and_carries_notes() {
        let block = Block::new()
            .attribute(
                Attribute::string("name")
                    .required()
                    .description("The name."),
            )
            .attribute(
                Attribute::string("mode")
                    .optional()
                    .validate(one_of(&["a", "b"])),
            )
            .attribute(Attribute::string("password").optional().sensitive())
            .attribute(Attribute::string("id").computed().description("The id."))
            .block(NestedBlock::timeouts(&["create"]));
        let md = schema_markdown(&block);
        assert!(
            md.contains("### Required\n\n- `name` (String) The name."),
            "{md}"
        );
        assert!(
            md.contains("- `mode` (String) Must be one of `a`, `b`."),
            "{md}"
        );
        assert!(md.contains("`password` (String), Sensitive"), "{md}");
        assert!(
            md.contains("### Read-Only\n\n- `id` (String) The id."),
            "{md}"
        );
        assert!(md.contains("### Nested Schema for `timeouts`"), "{md}");
    }
}
