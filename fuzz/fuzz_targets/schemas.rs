//! The fixed schema types the cty fuzz targets decode against.

use ceso::cty::Type;

/// A few schema types: bare primitives, `dynamic`, and a resource-like
/// object nesting every kind of type.
pub fn schemas() -> Vec<Type> {
    let disk = Type::object_with_optional(
        [("size", Type::Number), ("label", Type::String), ("thin", Type::Bool)],
        ["thin"],
    );
    let resource = Type::object_with_optional(
        [
            ("id", Type::String),
            ("name", Type::String),
            ("cpus", Type::Number),
            ("disk", Type::list(disk)),
            ("tags", Type::map(Type::String)),
            ("flags", Type::set(Type::Bool)),
            ("pair", Type::tuple([Type::String, Type::Number])),
            ("extra", Type::Dynamic),
            ("nested", Type::map(Type::list(Type::Dynamic))),
        ],
        ["tags", "extra"],
    );
    vec![Type::Dynamic, Type::String, Type::Number, Type::Bool, resource]
}
