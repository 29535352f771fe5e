//! Fuzzes the cty JSON decoders: arbitrary bytes decoded as values of fixed
//! schema types, and as a type description, must never panic, and whatever
//! decodes must re-encode to JSON that decodes to the same result.
#![no_main]

use std::sync::OnceLock;

use ceso::cty::{from_json, to_json, Type};
use libfuzzer_sys::fuzz_target;

mod schemas;

fn types() -> &'static [Type] {
    static TYPES: OnceLock<Vec<Type>> = OnceLock::new();
    TYPES.get_or_init(schemas::schemas)
}

fuzz_target!(|data: &[u8]| {
    for ty in types() {
        if let Ok(value) = from_json(data, ty) {
            let again = to_json(&value, ty).expect("a decoded value re-encodes");
            let back = from_json(&again, ty).expect("a re-encoded value decodes");
            assert_eq!(back, value, "JSON round trip changed the value");
        }
    }
    if let Ok(ty) = Type::from_json_bytes(data) {
        let again = ty.to_json_bytes();
        let back = Type::from_json_bytes(&again).expect("a re-encoded type decodes");
        assert_eq!(back, ty, "type JSON round trip changed the type");
    }
});
