//! Fuzzes the cty msgpack decoder: arbitrary bytes decoded against fixed
//! schema types must never panic, and whatever decodes must re-encode to
//! bytes that decode to the same value.
#![no_main]

use std::sync::OnceLock;

use ceso::cty::{from_msgpack, to_msgpack, Type};
use libfuzzer_sys::fuzz_target;

mod schemas;

fn types() -> &'static [Type] {
    static TYPES: OnceLock<Vec<Type>> = OnceLock::new();
    TYPES.get_or_init(schemas::schemas)
}

fuzz_target!(|data: &[u8]| {
    for ty in types() {
        if let Ok(value) = from_msgpack(data, ty) {
            let again = to_msgpack(&value, ty).expect("a decoded value re-encodes");
            let back = from_msgpack(&again, ty).expect("a re-encoded value decodes");
            assert_eq!(back, value, "msgpack round trip changed the value");
        }
    }
});
