//! The msgpack value codec: cty values as Terraform's plugin protocol carries
//! them in `DynamicValue.msgpack`, following go-cty's `cty/msgpack`.
//!
//! Wire rules, as go-cty writes and reads them:
//! - null is msgpack nil; an unknown is an extension value. Terraform
//!   writes a plain unknown as fixext1 type 0 (`d4 00 00`) and a refined
//!   unknown as extension type 12 whose payload is a map of refinements.
//!   On reading, any extension of length 0 or 1 (whatever its type code) is
//!   an unknown, and a longer one must have type 12 and a map payload; the
//!   refinements are dropped ([`Value::Unknown`] carries none).
//! - a number is written as a msgpack int when it is an integer that fits
//!   in i64, else as a float64 when it is not an integer and a float64
//!   holds it exactly, else as its plain decimal string. Reading accepts
//!   any int or uint width, float32, float64, and str (or bin) text.
//! - strings are str (bin is accepted on reading); bools are bools.
//! - lists, sets and tuples are arrays; maps and objects are maps keyed by
//!   element key or attribute name, written in sorted key order. Every
//!   attribute of an object type is written (nil for an absent one); on
//!   reading, an absent attribute becomes null and an undeclared one is an
//!   error.
//! - a value in a `dynamic` slot is a 2-element array: the type's JSON
//!   description (written as bin; str accepted) and the value encoded with
//!   that type. A null or unknown of no particular type is written bare.

use std::collections::BTreeMap;
use std::convert::Infallible;

use rmp::encode::{ByteBuf, ValueWriteError};
use rmp::Marker;

use super::error::{CtyError, Path, PathStep};
use super::number::{shorten, Number};
use super::types::Type;
use super::value::{resolve_slot, Slot, Value};
use super::MAX_DEPTH;

/// The extension type code Terraform uses for unknowns with refinements.
pub const REFINED_UNKNOWN_EXT: i8 = 12;

/// The bytes of a plain unknown: fixext1 with type 0 and a zero byte.
pub const UNKNOWN_BYTES: [u8; 3] = [0xd4, 0x00, 0x00];

/// Encodes `v` as a value of type `ty` in msgpack.
///
/// Fails when the value does not conform to the type (see
/// [`Value::check_type`]); the error names the path.
pub fn to_msgpack(v: &Value, ty: &Type) -> Result<Vec<u8>, CtyError> {
    let mut enc = Encoder {
        out: ByteBuf::new(),
        path: Vec::new(),
    };
    enc.value(v, ty, 0)?;
    Ok(enc.out.into_vec())
}

/// Decodes msgpack bytes as a value of type `ty`.
///
/// Never panics; malformed, truncated, mistyped or over-deep input (beyond
/// [`MAX_DEPTH`] levels) and trailing bytes are errors naming the path.
pub fn from_msgpack(b: &[u8], ty: &Type) -> Result<Value, CtyError> {
    let mut dec = Decoder {
        buf: b,
        pos: 0,
        path: Vec::new(),
    };
    let v = dec.value(ty, 0)?;
    if dec.pos < b.len() {
        return Err(CtyError::TrailingBytes {
            count: b.len() - dec.pos,
        });
    }
    Ok(v)
}

fn ok<T>(r: Result<T, ValueWriteError<Infallible>>) -> T {
    match r {
        Ok(v) => v,
        Err(ValueWriteError::InvalidMarkerWrite(e) | ValueWriteError::InvalidDataWrite(e)) => {
            match e {}
        }
    }
}

fn ok0<T>(r: Result<T, Infallible>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => match e {},
    }
}

struct Encoder {
    out: ByteBuf,
    path: Vec<PathStep>,
}

impl Encoder {
    fn here(&self) -> Path {
        Path(self.path.clone())
    }

    fn len32(&self, len: usize) -> Result<u32, CtyError> {
        u32::try_from(len).map_err(|_| {
            CtyError::invalid(
                &self.here(),
                "too long for msgpack (over 4 GiB or 2^32 elements)",
            )
        })
    }

    fn str(&mut self, s: &str) -> Result<(), CtyError> {
        let n = self.len32(s.len())?;
        ok(rmp::encode::write_str_len(&mut self.out, n));
        self.out.as_mut_vec().extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn number(&mut self, n: &Number) -> Result<(), CtyError> {
        if n.is_integer() {
            if let Some(i) = n.to_i64() {
                ok(rmp::encode::write_sint(&mut self.out, i));
                return Ok(());
            }
        } else if let Some(f) = n.to_f64_exact() {
            ok(rmp::encode::write_f64(&mut self.out, f));
            return Ok(());
        }
        self.str(&n.to_string())
    }

    fn value(&mut self, v: &Value, ty: &Type, depth: usize) -> Result<(), CtyError> {
        if depth > MAX_DEPTH {
            return Err(CtyError::too_deep(&self.here()));
        }
        let (ty, v) = match resolve_slot(v, ty, &|| self.here())? {
            Slot::Null => {
                ok0(rmp::encode::write_nil(&mut self.out));
                return Ok(());
            }
            Slot::Unknown => {
                self.out.as_mut_vec().extend_from_slice(&UNKNOWN_BYTES);
                return Ok(());
            }
            Slot::Concrete {
                ty,
                value,
                wrap: true,
            } => {
                ok(rmp::encode::write_array_len(&mut self.out, 2));
                let type_json = ty.to_json_bytes();
                let n = self.len32(type_json.len())?;
                ok(rmp::encode::write_bin_len(&mut self.out, n));
                self.out.as_mut_vec().extend_from_slice(&type_json);
                return self.value(value, &ty, depth + 1);
            }
            Slot::Concrete {
                ty,
                value,
                wrap: false,
            } => (ty, value),
        };
        match (&*ty, v) {
            (Type::String, Value::String(s)) => self.str(s),
            (Type::Number, Value::Number(n)) => self.number(n),
            (Type::Bool, Value::Bool(b)) => {
                ok0(rmp::encode::write_bool(&mut self.out, *b));
                Ok(())
            }
            (Type::List(et), Value::List(vs)) | (Type::Set(et), Value::Set(vs)) => {
                let n = self.len32(vs.len())?;
                ok(rmp::encode::write_array_len(&mut self.out, n));
                for (i, ev) in vs.iter().enumerate() {
                    self.path.push(PathStep::Index(i as u64));
                    self.value(ev, et, depth + 1)?;
                    self.path.pop();
                }
                Ok(())
            }
            (Type::Map(et), Value::Map(m)) => {
                let n = self.len32(m.len())?;
                ok(rmp::encode::write_map_len(&mut self.out, n));
                for (k, ev) in m {
                    self.path.push(PathStep::Key(k.clone()));
                    self.str(k)?;
                    self.value(ev, et, depth + 1)?;
                    self.path.pop();
                }
                Ok(())
            }
            (Type::Tuple(ts), Value::Tuple(vs)) => {
                if ts.len() != vs.len() {
                    return Err(CtyError::TupleLength {
                        path: self.here(),
                        expected: ts.len(),
                        found: vs.len(),
                    });
                }
                let n = self.len32(vs.len())?;
                ok(rmp::encode::write_array_len(&mut self.out, n));
                for (i, (et, ev)) in ts.iter().zip(vs).enumerate() {
                    self.path.push(PathStep::Index(i as u64));
                    self.value(ev, et, depth + 1)?;
                    self.path.pop();
                }
                Ok(())
            }
            (Type::Object { attrs, .. }, Value::Object(m)) => {
                if let Some(extra) = m.keys().find(|k| !attrs.contains_key(*k)) {
                    return Err(CtyError::UnsupportedAttribute {
                        path: self.here(),
                        name: extra.clone(),
                    });
                }
                let n = self.len32(attrs.len())?;
                ok(rmp::encode::write_map_len(&mut self.out, n));
                for (k, at) in attrs {
                    self.path.push(PathStep::Attr(k.clone()));
                    self.str(k)?;
                    self.value(m.get(k).unwrap_or(&Value::Null), at, depth + 1)?;
                    self.path.pop();
                }
                Ok(())
            }
            (t, v) => Err(CtyError::mismatch(
                &self.here(),
                t.friendly_name(),
                v.kind_name(),
            )),
        }
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    path: Vec<PathStep>,
}

/// Names a msgpack marker byte for error messages.
fn describe(b: u8) -> &'static str {
    match Marker::from_u8(b) {
        Marker::Null => "msgpack nil",
        Marker::True | Marker::False => "msgpack bool",
        Marker::FixPos(_)
        | Marker::FixNeg(_)
        | Marker::U8
        | Marker::U16
        | Marker::U32
        | Marker::U64
        | Marker::I8
        | Marker::I16
        | Marker::I32
        | Marker::I64 => "msgpack integer",
        Marker::F32 | Marker::F64 => "msgpack float",
        Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => "msgpack str",
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => "msgpack bin",
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => "msgpack array",
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => "msgpack map",
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16
        | Marker::Ext8
        | Marker::Ext16
        | Marker::Ext32 => "msgpack extension",
        Marker::Reserved => "the reserved msgpack byte 0xc1",
    }
}

fn is_ext(b: u8) -> bool {
    matches!(b, 0xc7..=0xc9 | 0xd4..=0xd8)
}

fn is_map(b: u8) -> bool {
    matches!(b, 0x80..=0x8f | 0xde | 0xdf)
}

impl<'a> Decoder<'a> {
    fn here(&self) -> Path {
        Path(self.path.clone())
    }

    fn truncated(&self, what: &str) -> CtyError {
        CtyError::Truncated {
            path: self.here(),
            what: what.to_owned(),
        }
    }

    fn peek(&self, what: &str) -> Result<u8, CtyError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.truncated(what))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CtyError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.truncated(what)),
        }
    }

    fn take_array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CtyError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, CtyError> {
        Ok(self.take_array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, CtyError> {
        Ok(u16::from_be_bytes(self.take_array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, CtyError> {
        Ok(u32::from_be_bytes(self.take_array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, CtyError> {
        Ok(u64::from_be_bytes(self.take_array(what)?))
    }

    fn mismatch(&self, expected: &str, marker: u8) -> CtyError {
        CtyError::mismatch(&self.here(), expected, describe(marker))
    }

    /// Reads a str or bin body (after peeking that one is next), or `None`
    /// when the next item is neither.
    fn text_bytes(&mut self, what: &str) -> Result<Option<&'a [u8]>, CtyError> {
        let m = self.peek(what)?;
        let len = match m {
            0xa0..=0xbf => {
                self.pos += 1;
                usize::from(m & 0x1f)
            }
            0xd9 | 0xc4 => {
                self.pos += 1;
                usize::from(self.u8(what)?)
            }
            0xda | 0xc5 => {
                self.pos += 1;
                usize::from(self.u16(what)?)
            }
            0xdb | 0xc6 => {
                self.pos += 1;
                self.u32(what)? as usize
            }
            _ => return Ok(None),
        };
        self.take(len, what).map(Some)
    }

    fn string(&mut self, what: &str) -> Result<Option<&'a str>, CtyError> {
        match self.text_bytes(what)? {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b)
                .map(Some)
                .map_err(|_| CtyError::invalid(&self.here(), format!("{what} is not valid UTF-8"))),
        }
    }

    fn array_len(&mut self, expected: &str) -> Result<usize, CtyError> {
        let m = self.u8(expected)?;
        match m {
            0x90..=0x9f => Ok(usize::from(m & 0x0f)),
            0xdc => Ok(usize::from(self.u16(expected)?)),
            0xdd => Ok(self.u32(expected)? as usize),
            _ => {
                self.pos -= 1;
                Err(self.mismatch(expected, m))
            }
        }
    }

    fn map_len(&mut self, expected: &str) -> Result<usize, CtyError> {
        let m = self.u8(expected)?;
        match m {
            0x80..=0x8f => Ok(usize::from(m & 0x0f)),
            0xde => Ok(usize::from(self.u16(expected)?)),
            0xdf => Ok(self.u32(expected)? as usize),
            _ => {
                self.pos -= 1;
                Err(self.mismatch(expected, m))
            }
        }
    }

    /// A capacity hint that cannot exceed what the remaining input could
    /// possibly hold (every element takes at least one byte).
    fn cap(&self, n: usize) -> usize {
        n.min(self.buf.len() - self.pos)
    }

    /// Reads an extension value, which always means "unknown".
    fn unknown(&mut self) -> Result<Value, CtyError> {
        let what = "an unknown value (msgpack extension)";
        let m = self.u8(what)?;
        let len = match m {
            0xd4 => 1,
            0xd5 => 2,
            0xd6 => 4,
            0xd7 => 8,
            0xd8 => 16,
            0xc7 => usize::from(self.u8(what)?),
            0xc8 => usize::from(self.u16(what)?),
            _ => self.u32(what)? as usize,
        };
        let code = self.u8(what)? as i8;
        let body = self.take(len, what)?;
        if len <= 1 {
            // A zero- or one-byte extension of any type is a plain unknown.
            return Ok(Value::Unknown);
        }
        if code != REFINED_UNKNOWN_EXT {
            return Err(CtyError::invalid(
                &self.here(),
                format!("unsupported msgpack extension type {code} with length {len} (only type 12 may carry a payload)"),
            ));
        }
        if !body.first().is_some_and(|&b| is_map(b)) {
            return Err(CtyError::invalid(
                &self.here(),
                "the refinements of an unknown value are not a msgpack map",
            ));
        }
        // The refinements themselves are not kept.
        Ok(Value::Unknown)
    }

    fn value(&mut self, ty: &Type, depth: usize) -> Result<Value, CtyError> {
        if depth > MAX_DEPTH {
            return Err(CtyError::too_deep(&self.here()));
        }
        // Named cheaply (no element types): this runs for every value.
        let expected = ty.kind_name();
        let m = self.peek(expected)?;
        if is_ext(m) {
            return self.unknown();
        }
        if *ty == Type::Dynamic {
            return self.dynamic(depth);
        }
        if m == 0xc0 {
            self.pos += 1;
            return Ok(Value::Null);
        }
        match ty {
            Type::Dynamic => self.dynamic(depth),
            Type::String => match self.string("a string")? {
                Some(s) => Ok(Value::String(s.to_owned())),
                None => Err(self.mismatch("string", m)),
            },
            Type::Bool => match m {
                0xc2 | 0xc3 => {
                    self.pos += 1;
                    Ok(Value::Bool(m == 0xc3))
                }
                _ => Err(self.mismatch("bool", m)),
            },
            Type::Number => self.number(m).map(Value::Number),
            Type::List(et) | Type::Set(et) => {
                let n = self.array_len(expected)?;
                let mut vs = Vec::with_capacity(self.cap(n));
                for i in 0..n {
                    self.path.push(PathStep::Index(i as u64));
                    vs.push(self.value(et, depth + 1)?);
                    self.path.pop();
                }
                Ok(if matches!(ty, Type::List(_)) {
                    Value::List(vs)
                } else {
                    Value::Set(vs)
                })
            }
            Type::Tuple(ts) => {
                let n = self.array_len(expected)?;
                if n != ts.len() {
                    return Err(CtyError::TupleLength {
                        path: self.here(),
                        expected: ts.len(),
                        found: n,
                    });
                }
                let mut vs = Vec::with_capacity(n);
                for (i, et) in ts.iter().enumerate() {
                    self.path.push(PathStep::Index(i as u64));
                    vs.push(self.value(et, depth + 1)?);
                    self.path.pop();
                }
                Ok(Value::Tuple(vs))
            }
            Type::Map(et) => {
                let n = self.map_len(expected)?;
                let mut out = BTreeMap::new();
                for _ in 0..n {
                    let key = self.key("a string map key")?;
                    if out.contains_key(key) {
                        return Err(CtyError::DuplicateKey {
                            path: self.here(),
                            key: key.to_owned(),
                        });
                    }
                    self.path.push(PathStep::Key(key.to_owned()));
                    let v = self.value(et, depth + 1)?;
                    self.path.pop();
                    out.insert(key.to_owned(), v);
                }
                Ok(Value::Map(out))
            }
            Type::Object { attrs, .. } => {
                let n = self.map_len(expected)?;
                let mut out = BTreeMap::new();
                for _ in 0..n {
                    let key = self.key("a string attribute name")?;
                    let Some(at) = attrs.get(key) else {
                        return Err(CtyError::UnsupportedAttribute {
                            path: self.here(),
                            name: key.to_owned(),
                        });
                    };
                    if out.contains_key(key) {
                        return Err(CtyError::DuplicateKey {
                            path: self.here(),
                            key: key.to_owned(),
                        });
                    }
                    self.path.push(PathStep::Attr(key.to_owned()));
                    let v = self.value(at, depth + 1)?;
                    self.path.pop();
                    out.insert(key.to_owned(), v);
                }
                for k in attrs.keys() {
                    if !out.contains_key(k) {
                        out.insert(k.clone(), Value::Null);
                    }
                }
                Ok(Value::Object(out))
            }
        }
    }

    /// Reads a map key or attribute name, which must be a str (or bin).
    fn key(&mut self, expected: &str) -> Result<&'a str, CtyError> {
        let m = self.peek(expected)?;
        match self.string(expected)? {
            Some(k) => Ok(k),
            None => Err(CtyError::mismatch(&self.here(), expected, describe(m))),
        }
    }

    fn number(&mut self, m: u8) -> Result<Number, CtyError> {
        let what = "a number";
        let n = match m {
            0x00..=0x7f => {
                self.pos += 1;
                Number::from(i64::from(m))
            }
            0xe0..=0xff => {
                self.pos += 1;
                Number::from(i64::from(m as i8))
            }
            0xcc..=0xd3 => {
                self.pos += 1;
                match m {
                    0xcc => Number::from(u64::from(self.u8(what)?)),
                    0xcd => Number::from(u64::from(self.u16(what)?)),
                    0xce => Number::from(u64::from(self.u32(what)?)),
                    0xcf => Number::from(self.u64(what)?),
                    0xd0 => Number::from(i64::from(self.u8(what)? as i8)),
                    0xd1 => Number::from(i64::from(self.u16(what)? as i16)),
                    0xd2 => Number::from(i64::from(self.u32(what)? as i32)),
                    _ => Number::from(self.u64(what)? as i64),
                }
            }
            0xca | 0xcb => {
                self.pos += 1;
                let f = if m == 0xca {
                    f64::from(f32::from_bits(self.u32(what)?))
                } else {
                    f64::from_bits(self.u64(what)?)
                };
                Number::try_from(f).map_err(|_| CtyError::InvalidNumber {
                    path: self.here(),
                    text: f.to_string(),
                    reason: "infinities and NaN are not supported".to_owned(),
                })?
            }
            _ => match self.string(what)? {
                Some(text) => Number::parse(text).map_err(|e| match e {
                    CtyError::InvalidNumber { reason, .. } => CtyError::InvalidNumber {
                        path: self.here(),
                        text: shorten(text),
                        reason,
                    },
                    other => other,
                })?,
                None => return Err(self.mismatch("number", m)),
            },
        };
        Ok(n)
    }

    fn dynamic(&mut self, depth: usize) -> Result<Value, CtyError> {
        let what = "a dynamic value ([type, value] array)";
        let m = self.peek(what)?;
        if m == 0xc0 {
            self.pos += 1;
            return Ok(Value::Null);
        }
        let n = self.array_len(what)?;
        if n != 2 {
            return Err(CtyError::invalid(
                &self.here(),
                format!("a dynamic value must be a [type, value] array of 2 elements, found {n}"),
            ));
        }
        let tm = self.peek(what)?;
        let Some(type_json) = self.text_bytes("the type of a dynamic value")? else {
            return Err(CtyError::mismatch(
                &self.here(),
                "the type of a dynamic value as JSON bytes",
                describe(tm),
            ));
        };
        let ty = Type::from_json_bytes(type_json).map_err(|e| {
            CtyError::invalid(
                &self.here(),
                format!("the type of a dynamic value is invalid: {e}"),
            )
        })?;
        let value = self.value(&ty, depth + 1)?;
        Ok(Value::dynamic(ty, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cty::testgen::{arb_type, arb_typed_value};
    use proptest::prelude::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Encodes, checks the bytes, and decodes back to the same value.
    fn case(v: &Value, ty: &Type, want_hex: &str) {
        let b = to_msgpack(v, ty).unwrap();
        assert_eq!(hex(&b), hex(&unhex(want_hex)), "encoding {v:?} as {ty}");
        assert_eq!(
            &from_msgpack(&b, ty).unwrap(),
            v,
            "decoding {want_hex} as {ty}"
        );
    }

    fn num(s: &str) -> Value {
        Value::Number(Number::parse(s).unwrap())
    }

    #[test]
    fn null_and_unknown() {
        case(&Value::Null, &Type::String, "c0");
        case(&Value::Unknown, &Type::String, "d4 00 00");
        case(&Value::Null, &Type::Dynamic, "c0");
        case(&Value::Unknown, &Type::Dynamic, "d4 00 00");
        case(&Value::Unknown, &Type::list(Type::Number), "d4 00 00");
    }

    #[test]
    fn refined_unknowns_decode_as_unknown() {
        // Not null, string prefix "ab": ext8, 8 bytes, type 12, {1: false, 2: "ab"}
        let refined = unhex("c7 07 0c 82 01 c2 02 a2 61 62");
        assert_eq!(
            from_msgpack(&refined, &Type::String).unwrap(),
            Value::Unknown
        );
        // Number bounds, as fixext8? Use ext8: {3: [0, true], 4: [10, false]}
        let bounds = unhex("c7 09 0c 82 03 92 00 c3 04 92 0a c2");
        assert_eq!(
            from_msgpack(&bounds, &Type::Number).unwrap(),
            Value::Unknown
        );
        // Length bounds on a list, as a fixext4: {5: 1, 6: 3} is 5 bytes, so ext8.
        let lengths = unhex("c7 05 0c 82 05 01 06 03");
        assert_eq!(
            from_msgpack(&lengths, &Type::list(Type::String)).unwrap(),
            Value::Unknown
        );
        // Refined unknown where the schema says dynamic: refinements ignored.
        assert_eq!(
            from_msgpack(&unhex("d5 0c 81 01"), &Type::Dynamic).unwrap(),
            Value::Unknown
        );
        // Inside an object.
        let obj = Type::object([("id", Type::String)]);
        let bytes = unhex("81 a2 69 64 c7 03 0c 81 01 c2");
        assert_eq!(
            from_msgpack(&bytes, &obj).unwrap(),
            Value::object([("id", Value::Unknown)])
        );
        // Zero-length and one-byte extensions of any type code are unknown.
        assert_eq!(
            from_msgpack(&unhex("c7 00 05"), &Type::Bool).unwrap(),
            Value::Unknown
        );
        assert_eq!(
            from_msgpack(&unhex("d4 07 ff"), &Type::Bool).unwrap(),
            Value::Unknown
        );
        // A payload under another type code, or a non-map payload, is refused.
        assert!(from_msgpack(&unhex("d5 01 81 01"), &Type::String).is_err());
        assert!(from_msgpack(&unhex("d5 0c 01 01"), &Type::String).is_err());
    }

    #[test]
    fn strings_and_bools() {
        case(&Value::from(""), &Type::String, "a0");
        case(&Value::from("hi"), &Type::String, "a2 68 69");
        let long = "x".repeat(40);
        case(
            &Value::from(long.as_str()),
            &Type::String,
            &format!("d9 28 {}", "78".repeat(40)),
        );
        case(&Value::from(true), &Type::Bool, "c3");
        case(&Value::from(false), &Type::Bool, "c2");
        // bin is accepted for strings
        assert_eq!(
            from_msgpack(&unhex("c4 02 68 69"), &Type::String).unwrap(),
            Value::from("hi")
        );
        assert!(from_msgpack(&unhex("a1 ff"), &Type::String)
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
    }

    #[test]
    fn integers() {
        case(&Value::from(0), &Type::Number, "00");
        case(&Value::from(127), &Type::Number, "7f");
        case(&Value::from(128), &Type::Number, "cc 80");
        case(&Value::from(256), &Type::Number, "cd 01 00");
        case(&Value::from(70000), &Type::Number, "ce 00 01 11 70");
        case(
            &Value::from(1i64 << 40),
            &Type::Number,
            "cf 00 00 01 00 00 00 00 00",
        );
        case(&Value::from(-1), &Type::Number, "ff");
        case(&Value::from(-32), &Type::Number, "e0");
        case(&Value::from(-33), &Type::Number, "d0 df");
        case(&Value::from(-200), &Type::Number, "d1 ff 38");
        case(&Value::from(-70000), &Type::Number, "d2 ff fe ee 90");
        case(
            &Value::from(i64::MIN),
            &Type::Number,
            "d3 80 00 00 00 00 00 00 00",
        );
        case(
            &Value::from(i64::MAX),
            &Type::Number,
            "cf 7f ff ff ff ff ff ff ff",
        );
        // Integers as decimal texts with exponents are still integers.
        case(&num("1e3"), &Type::Number, "cd 03 e8");
    }

    #[test]
    fn big_integers_are_strings() {
        // u64::MAX does not fit i64: go-cty writes the decimal string.
        case(
            &Value::number(u64::MAX),
            &Type::Number,
            &format!("b4 {}", hex(b"18446744073709551615")),
        );
        // ...but accepts uint64 on reading.
        assert_eq!(
            from_msgpack(&unhex("cf ff ff ff ff ff ff ff ff"), &Type::Number).unwrap(),
            Value::number(u64::MAX)
        );
        // 2^64 is exactly a float64, but integers beyond i64 are strings.
        case(
            &num("18446744073709551616"),
            &Type::Number,
            &format!("b4 {}", hex(b"18446744073709551616")),
        );
        let huge = format!("1{}", "0".repeat(400));
        let b = to_msgpack(&num("1e400"), &Type::Number).unwrap();
        assert_eq!(&b[..3], &[0xda, 0x01, 0x91]); // str16 of 401 bytes
        assert_eq!(&b[3..], huge.as_bytes());
        assert_eq!(from_msgpack(&b, &Type::Number).unwrap(), num("1e400"));
    }

    #[test]
    fn decimals() {
        // 0.5 is exactly a float64.
        case(&num("0.5"), &Type::Number, "cb 3f e0 00 00 00 00 00 00");
        case(&num("-2.25"), &Type::Number, "cb c0 02 00 00 00 00 00 00");
        // 0.1 is not, so it travels as text, as go-cty writes it.
        case(&num("0.1"), &Type::Number, "a3 30 2e 31");
        // A float64 0.1 from Terraform decodes to its exact value and is
        // written back as the same float64.
        case(
            &Value::number(Number::try_from(0.1).unwrap()),
            &Type::Number,
            "cb 3f b9 99 99 99 99 99 9a",
        );
        // Tiny decimals as plain text.
        let tiny = to_msgpack(&num("1e-400"), &Type::Number).unwrap();
        assert_eq!(from_msgpack(&tiny, &Type::Number).unwrap(), num("1e-400"));
        assert!(tiny.ends_with(b"0001"));
        // float32 and text forms are accepted on reading.
        assert_eq!(
            from_msgpack(&unhex("ca 3f c0 00 00"), &Type::Number).unwrap(),
            num("1.5")
        );
        assert_eq!(
            from_msgpack(&unhex("a4 31 65 2b 32"), &Type::Number).unwrap(),
            num("100")
        );
        assert_eq!(
            from_msgpack(&unhex("c4 01 37"), &Type::Number).unwrap(),
            num("7")
        );
        // NaN, infinities and junk text are refused.
        assert!(from_msgpack(&unhex("cb 7f f8 00 00 00 00 00 00"), &Type::Number).is_err());
        assert!(from_msgpack(&unhex("cb 7f f0 00 00 00 00 00 00"), &Type::Number).is_err());
        let err = from_msgpack(&unhex("a3 61 62 63"), &Type::Number).unwrap_err();
        assert!(matches!(err, CtyError::InvalidNumber { .. }), "{err}");
    }

    #[test]
    fn nested_object_with_optional_attrs() {
        let ty = Type::object_with_optional(
            [
                ("name", Type::String),
                (
                    "disk",
                    Type::list(Type::object([
                        ("size", Type::Number),
                        ("label", Type::String),
                    ])),
                ),
                ("notes", Type::String),
            ],
            ["notes"],
        );
        let v = Value::object([
            (
                "disk",
                Value::List(vec![Value::object([
                    ("label", Value::from("a")),
                    ("size", Value::from(10)),
                ])]),
            ),
            ("name", Value::from("vm")),
            ("notes", Value::Null),
        ]);
        // Attributes in sorted order: disk, name, notes; inside: label, size.
        case(
            &v,
            &ty,
            "83 a4 6469736b 91 82 a5 6c6162656c a1 61 a4 73697a65 0a a4 6e616d65 a2 766d a5 6e6f746573 c0",
        );
        // An omitted attribute is written as nil and read back as null.
        let partial = Value::object([("name", Value::from("vm"))]);
        let b = to_msgpack(&partial, &ty).unwrap();
        assert_eq!(
            from_msgpack(&b, &ty).unwrap(),
            Value::object([
                ("disk", Value::Null),
                ("name", Value::from("vm")),
                ("notes", Value::Null)
            ])
        );
        // Reading a map lacking attributes fills in nulls.
        assert_eq!(
            from_msgpack(&unhex("81 a4 6e616d65 a2 766d"), &ty).unwrap(),
            Value::object([
                ("disk", Value::Null),
                ("name", Value::from("vm")),
                ("notes", Value::Null)
            ])
        );
        // Extra attributes are refused, naming the path.
        let err = from_msgpack(&unhex("81 a4 6469736b 91 81 a1 78 c0"), &ty).unwrap_err();
        assert_eq!(
            err.to_string(),
            "at .disk[0]: unsupported attribute \"x\": the object type has no such attribute"
        );
        // A mistyped leaf is reported with its full path.
        let err = from_msgpack(&unhex("81 a4 6469736b 91 81 a4 73697a65 c3"), &ty).unwrap_err();
        assert_eq!(
            err.to_string(),
            "at .disk[0].size: expected number, found msgpack bool"
        );
        // Encoding an attribute the type lacks is refused too.
        let err = to_msgpack(&Value::object([("bogus", Value::Null)]), &ty).unwrap_err();
        assert!(matches!(err, CtyError::UnsupportedAttribute { .. }));
    }

    #[test]
    fn collections() {
        let set = Value::Set(vec![Value::from("b"), Value::from("a")]);
        case(&set, &Type::set(Type::String), "92 a1 62 a1 61");
        case(&Value::Set(vec![]), &Type::set(Type::String), "90");
        let map = Value::map([("z", Value::from(1)), ("a", Value::Null)]);
        case(&map, &Type::map(Type::Number), "82 a1 61 c0 a1 7a 01");
        let tuple = Value::Tuple(vec![Value::from("x"), Value::from(true), Value::Unknown]);
        case(
            &tuple,
            &Type::tuple([Type::String, Type::Bool, Type::Number]),
            "93 a1 78 c3 d4 00 00",
        );
        assert!(matches!(
            from_msgpack(&unhex("92 a1 78 c3"), &Type::tuple([Type::String])),
            Err(CtyError::TupleLength {
                expected: 1,
                found: 2,
                ..
            })
        ));
        assert!(matches!(
            from_msgpack(&unhex("82 a1 61 01 a1 61 02"), &Type::map(Type::Number)),
            Err(CtyError::DuplicateKey { .. })
        ));
        let err = from_msgpack(&unhex("81 01 02"), &Type::map(Type::Number)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "at (root): expected a string map key, found msgpack integer"
        );
        // A set's element order is kept.
        assert_eq!(
            from_msgpack(&unhex("92 02 01"), &Type::set(Type::Number)).unwrap(),
            Value::Set(vec![2.into(), 1.into()])
        );
    }

    #[test]
    fn dynamic_values() {
        let v = Value::dynamic(Type::String, Value::from("hi"));
        // [bin8 "\"string\"", "hi"]
        case(
            &v,
            &Type::Dynamic,
            &format!("92 c4 08 {} a2 68 69", hex(b"\"string\"")),
        );
        let lt = Type::list(Type::Number);
        let v = Value::dynamic(lt.clone(), Value::List(vec![Value::from(1)]));
        case(
            &v,
            &Type::Dynamic,
            &format!("92 c4 11 {} 91 01", hex(br#"["list","number"]"#)),
        );
        // Typed null and typed unknown inside the wrapper.
        case(
            &Value::dynamic(Type::Bool, Value::Null),
            &Type::Dynamic,
            &format!("92 c4 06 {} c0", hex(b"\"bool\"")),
        );
        case(
            &Value::dynamic(Type::Bool, Value::Unknown),
            &Type::Dynamic,
            &format!("92 c4 06 {} d4 00 00", hex(b"\"bool\"")),
        );
        // The type may arrive as str.
        let s = unhex(&format!("92 a8 {} a2 68 69", hex(b"\"string\"")));
        assert_eq!(
            from_msgpack(&s, &Type::Dynamic).unwrap(),
            Value::dynamic(Type::String, "hi".into())
        );
        // A bare value in a dynamic slot is wrapped with its implied type.
        let b = to_msgpack(&Value::from(5), &Type::Dynamic).unwrap();
        assert_eq!(
            from_msgpack(&b, &Type::Dynamic).unwrap(),
            Value::dynamic(Type::Number, 5.into())
        );
        // Dynamic inside an object.
        let ot = Type::object([("any", Type::Dynamic)]);
        let ov = Value::object([(
            "any",
            Value::dynamic(Type::map(Type::String), Value::map([("k", "v".into())])),
        )]);
        let b = to_msgpack(&ov, &ot).unwrap();
        assert_eq!(from_msgpack(&b, &ot).unwrap(), ov);
        // A "dynamic" type inside the wrapper is flattened.
        let nested = unhex(&format!(
            "92 a9 {} 92 c4 08 {} a1 78",
            hex(b"\"dynamic\""),
            hex(b"\"string\"")
        ));
        assert_eq!(
            from_msgpack(&nested, &Type::Dynamic).unwrap(),
            Value::dynamic(Type::String, "x".into())
        );
        // Malformed wrappers.
        assert!(from_msgpack(&unhex("91 a1 78"), &Type::Dynamic).is_err());
        assert!(from_msgpack(&unhex("92 01 01"), &Type::Dynamic).is_err());
        let err = from_msgpack(
            &unhex(&format!("92 a4 {} 01", hex(b"\"x\"x"))),
            &Type::Dynamic,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("type of a dynamic value is invalid"),
            "{err}"
        );
    }

    #[test]
    fn encode_errors_name_paths() {
        let ty = Type::object([("disk", Type::list(Type::object([("size", Type::Number)])))]);
        let v = Value::object([(
            "disk",
            Value::List(vec![Value::object([("size", Value::from("big"))])]),
        )]);
        assert_eq!(
            to_msgpack(&v, &ty).unwrap_err().to_string(),
            "at .disk[0].size: expected number, found Value::String"
        );
        let err = to_msgpack(&Value::List(vec![]), &Type::Dynamic).unwrap_err();
        assert!(
            err.to_string().contains("wrap it in Value::Dynamic"),
            "{err}"
        );
    }

    #[test]
    fn malformed_input() {
        assert!(matches!(
            from_msgpack(&[], &Type::String),
            Err(CtyError::Truncated { .. })
        ));
        assert!(matches!(
            from_msgpack(&unhex("c0 c0"), &Type::String),
            Err(CtyError::TrailingBytes { count: 1 })
        ));
        assert!(matches!(
            from_msgpack(&unhex("a5 68"), &Type::String),
            Err(CtyError::Truncated { .. })
        ));
        assert!(matches!(
            from_msgpack(&unhex("dd ff ff ff ff"), &Type::list(Type::Bool)),
            Err(CtyError::Truncated { .. })
        ));
        assert!(from_msgpack(&unhex("c1"), &Type::Bool)
            .unwrap_err()
            .to_string()
            .contains("reserved"));
        assert!(matches!(
            from_msgpack(&unhex("c7"), &Type::Bool),
            Err(CtyError::Truncated { .. })
        ));
        assert!(matches!(
            from_msgpack(&unhex("c9 ff ff ff ff 0c"), &Type::Bool),
            Err(CtyError::Truncated { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_refused() {
        // Endless [type "dynamic", [type "dynamic", ...]] wrappers.
        let mut b = Vec::new();
        for _ in 0..100_000 {
            b.extend_from_slice(&unhex(&format!("92 a9 {}", hex(b"\"dynamic\""))));
        }
        b.push(0xc0);
        assert!(matches!(
            from_msgpack(&b, &Type::Dynamic),
            Err(CtyError::TooDeep { .. })
        ));
        // A type deeper than the limit with matching input.
        let mut ty = Type::Bool;
        for _ in 0..(MAX_DEPTH + 10) {
            ty = Type::list(ty);
        }
        let mut b = vec![0x91; MAX_DEPTH + 10];
        b.push(0xc3);
        assert!(matches!(
            from_msgpack(&b, &ty),
            Err(CtyError::TooDeep { .. })
        ));
        // Within the limit it decodes.
        let mut ty = Type::Bool;
        let mut want = Value::Bool(true);
        for _ in 0..100 {
            ty = Type::list(ty);
            want = Value::List(vec![want]);
        }
        let mut b = vec![0x91; 100];
        b.push(0xc3);
        assert_eq!(from_msgpack(&b, &ty).unwrap(), want);
        assert_eq!(to_msgpack(&want, &ty).unwrap(), b);
    }

    proptest! {
        #[test]
        fn roundtrip((ty, v) in arb_typed_value(true)) {
            let b = to_msgpack(&v, &ty).unwrap();
            let back = from_msgpack(&b, &ty).unwrap();
            prop_assert_eq!(&back, &v);
            // Re-encoding gives the same bytes.
            prop_assert_eq!(to_msgpack(&back, &ty).unwrap(), b);
        }

        #[test]
        fn garbage_never_panics(ty in arb_type(), bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = from_msgpack(&bytes, &ty);
        }

        #[test]
        fn garbage_never_panics_dynamic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = from_msgpack(&bytes, &Type::Dynamic);
        }

        #[test]
        fn valid_input_of_another_type_never_panics((ty, v) in arb_typed_value(true), other in arb_type()) {
            let b = to_msgpack(&v, &ty).unwrap();
            if let Ok(got) = from_msgpack(&b, &other) {
                let again = to_msgpack(&got, &other).unwrap();
                prop_assert_eq!(from_msgpack(&again, &other).unwrap(), got);
            }
        }

        #[test]
        fn mangled_input_never_panics((ty, v) in arb_typed_value(true), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut b = to_msgpack(&v, &ty).unwrap();
            let i = at.index(b.len());
            b[i] = byte;
            // Whatever decodes must re-encode to something that decodes the same.
            if let Ok(got) = from_msgpack(&b, &ty) {
                let again = to_msgpack(&got, &ty).unwrap();
                prop_assert_eq!(from_msgpack(&again, &ty).unwrap(), got);
            }
            b.truncate(i);
            let _ = from_msgpack(&b, &ty);
        }
    }
}
