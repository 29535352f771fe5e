//! Proptest strategies for arbitrary cty types and values of those types,
//! shared by the codec tests.

use std::collections::BTreeMap;

use num_bigint::BigInt;
use proptest::prelude::*;

use super::{Number, Type, Value};

/// Attribute names and map keys: mostly identifiers, sometimes any text.
pub(crate) fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z_][a-z0-9_]{0,7}", 1 => ".{0,6}"]
}

/// An arbitrary type, nested a few levels.
pub(crate) fn arb_type() -> impl Strategy<Value = Type> {
    let leaf = prop_oneof![
        Just(Type::String),
        Just(Type::Number),
        Just(Type::Bool),
        Just(Type::Dynamic)
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(Type::list),
            inner.clone().prop_map(Type::set),
            inner.clone().prop_map(Type::map),
            proptest::collection::vec((arb_name(), inner.clone(), any::<bool>()), 0..4).prop_map(
                |attrs| {
                    let mut map = BTreeMap::new();
                    let mut optional = std::collections::BTreeSet::new();
                    for (name, t, opt) in attrs {
                        if opt {
                            optional.insert(name.clone());
                        }
                        map.insert(name, t);
                    }
                    optional.retain(|n| map.contains_key(n));
                    Type::Object {
                        attrs: map,
                        optional,
                    }
                }
            ),
            proptest::collection::vec(inner, 0..4).prop_map(Type::Tuple),
        ]
    })
}

/// An arbitrary number: small and large integers, floats (held exactly),
/// decimals, and huge or tiny values far beyond float64.
pub(crate) fn arb_number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::from),
        any::<u64>().prop_map(Number::from),
        (-300i64..300).prop_map(Number::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Number::try_from(f).unwrap_or_default()),
        (any::<i128>(), -40i64..40).prop_map(|(d, s)| Number::from_parts(BigInt::from(d), s)),
        ("-?[1-9][0-9]{0,60}", -450i64..450)
            .prop_map(|(d, e)| Number::parse(&format!("{d}e{e}")).unwrap_or_default()),
    ]
}

fn arb_value_inner(ty: &Type, unknown: bool, dyn_depth: u32) -> BoxedStrategy<Value> {
    let base: BoxedStrategy<Value> = match ty {
        Type::String => ".{0,12}".prop_map(Value::String).boxed(),
        Type::Number => arb_number().prop_map(Value::Number).boxed(),
        Type::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Type::List(et) => proptest::collection::vec(arb_value_inner(et, unknown, dyn_depth), 0..4)
            .prop_map(Value::List)
            .boxed(),
        Type::Set(et) => proptest::collection::vec(arb_value_inner(et, unknown, dyn_depth), 0..4)
            .prop_map(Value::Set)
            .boxed(),
        Type::Map(et) => proptest::collection::btree_map(
            arb_name(),
            arb_value_inner(et, unknown, dyn_depth),
            0..4,
        )
        .prop_map(Value::Map)
        .boxed(),
        Type::Tuple(ts) => ts
            .iter()
            .map(|t| arb_value_inner(t, unknown, dyn_depth))
            .collect::<Vec<_>>()
            .prop_map(Value::Tuple)
            .boxed(),
        Type::Object { attrs, .. } => attrs
            .iter()
            .map(|(k, t)| {
                let k = k.clone();
                arb_value_inner(t, unknown, dyn_depth).prop_map(move |v| (k.clone(), v))
            })
            .collect::<Vec<_>>()
            .prop_map(|kvs| Value::Object(kvs.into_iter().collect()))
            .boxed(),
        Type::Dynamic => {
            let concrete = if dyn_depth == 0 {
                prop_oneof![Just(Type::String), Just(Type::Number), Just(Type::Bool)].boxed()
            } else {
                arb_type()
                    .prop_filter("concrete", |t| *t != Type::Dynamic)
                    .boxed()
            };
            concrete
                .prop_flat_map(move |t| {
                    arb_value_inner(&t, unknown, dyn_depth.saturating_sub(1)).prop_map(move |v| {
                        Value::Dynamic {
                            ty: t.clone(),
                            value: Box::new(v),
                        }
                    })
                })
                .boxed()
        }
    };
    if unknown {
        prop_oneof![1 => Just(Value::Null), 1 => Just(Value::Unknown), 8 => base].boxed()
    } else {
        prop_oneof![1 => Just(Value::Null), 9 => base].boxed()
    }
}

/// An arbitrary value of `ty`; `unknown` allows unknowns in it.
pub(crate) fn arb_value(ty: &Type, unknown: bool) -> BoxedStrategy<Value> {
    arb_value_inner(ty, unknown, 2)
}

/// An arbitrary type together with an arbitrary value of it.
pub(crate) fn arb_typed_value(unknown: bool) -> impl Strategy<Value = (Type, Value)> {
    arb_type().prop_flat_map(move |t| (Just(t.clone()), arb_value(&t, unknown)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn generated_values_conform() {
        let mut runner = TestRunner::deterministic();
        for _ in 0..300 {
            let (t, v) = arb_typed_value(true)
                .new_tree(&mut runner)
                .unwrap()
                .current();
            v.check_type(&t).unwrap();
        }
    }
}
