//! `Tri<T>`: a model field that can say "not known yet" as well as null or a value. Plan-time
//! configuration may hold unknowns anywhere (a value from another resource not created yet);
//! a model field declared `Tri<T>` keeps that apart from null, where `Option<T>` reads both
//! as `None`.

use serde::de::{Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};

/// The newtype name through which `Tri` and the value decoder recognise each other.
pub(crate) const TRI_NAME: &str = "$ceso::Tri";
/// What an unknown `Tri` serializes as; `typed::to_value` turns it back into an unknown.
pub(crate) const UNKNOWN_MARK: &str = "\u{1}ceso:unknown\u{1}";

/// A value that is known, null, or unknown (during planning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tri<T> {
    /// A known, non-null value.
    Known(T),
    /// Null: not set.
    #[default]
    Null,
    /// Not known until apply.
    Unknown,
}

impl<T> Tri<T> {
    /// The value if known.
    pub fn known(&self) -> Option<&T> {
        match self {
            Tri::Known(v) => Some(v),
            _ => None,
        }
    }

    /// The value if known, taking it.
    pub fn into_known(self) -> Option<T> {
        match self {
            Tri::Known(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the value is not known yet.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Tri::Unknown)
    }

    /// Whether the value is null.
    pub fn is_null(&self) -> bool {
        matches!(self, Tri::Null)
    }

    /// A borrowed view.
    pub fn as_ref(&self) -> Tri<&T> {
        match self {
            Tri::Known(v) => Tri::Known(v),
            Tri::Null => Tri::Null,
            Tri::Unknown => Tri::Unknown,
        }
    }
}

impl Tri<String> {
    /// The string if known.
    pub fn as_deref(&self) -> Option<&str> {
        self.known().map(String::as_str)
    }
}

impl<T> From<Option<T>> for Tri<T> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Tri::Null, Tri::Known)
    }
}

impl<T: Serialize> Serialize for Tri<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Tri::Known(v) => s.serialize_some(v),
            Tri::Null => s.serialize_none(),
            Tri::Unknown => s.serialize_newtype_struct(TRI_NAME, UNKNOWN_MARK),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Tri<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_newtype_struct(TRI_NAME, TriVisitor(std::marker::PhantomData))
    }
}

struct TriVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for TriVisitor<T> {
    type Value = Tri<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a value, null, or unknown")
    }

    /// The value decoder's way of saying "unknown".
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Tri::Unknown)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Tri::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        T::deserialize(d).map(Tri::Known)
    }

    /// Other deserializers (e.g. JSON) hand the newtype's content over as it is.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Option::<T>::deserialize(d).map(Tri::from)
    }
}
