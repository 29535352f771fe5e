//! The cty `number`: an exact decimal of arbitrary size, with the parsing
//! and formatting rules the wire codecs rely on.
//!
//! cty itself keeps numbers as 512-bit binary floats; Terraform writes them
//! on the wire as an integer, a float64 or a decimal string. Keeping them as
//! exact decimals here means every form Terraform sends is held without loss
//! and is written back in the same form, so Terraform sees the very value it
//! sent (a float64 is held as its exact binary value, not a shortened
//! decimal).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use bigdecimal::BigDecimal;
use num_bigint::{BigInt, Sign};

use super::error::{CtyError, Path};

/// The most decimal digits a number read from the wire may have when written
/// out in plain (non-exponent) form. This admits every float64 (whose exact
/// expansions need at most 1,074 fraction digits) and numbers like `1e400`,
/// while refusing inputs such as `1e999999999` whose plain form would take
/// gigabytes.
pub const MAX_NUMBER_DIGITS: usize = 10_000;

/// An exact decimal number of arbitrary size and precision: the value of the
/// cty `number` type.
///
/// Numbers are kept normalized (no trailing zeros in the digits), so `1.50`
/// and `1.5` are the same value and equal, hash and order alike. Infinities
/// and NaN are not representable.
#[derive(Clone)]
pub struct Number(BigDecimal);

impl Number {
    /// The number zero.
    pub fn zero() -> Number {
        Number(BigDecimal::new(BigInt::from(0), 0))
    }

    /// Builds a number from an integer and a decimal scale: the value is
    /// `digits × 10^-scale`.
    pub fn from_parts(digits: BigInt, scale: i64) -> Number {
        let (digits, scale) = normalize(digits, scale);
        Number(BigDecimal::new(digits, scale))
    }

    /// The value as a [`BigDecimal`] (normalized: no trailing zeros).
    pub fn as_big_decimal(&self) -> &BigDecimal {
        &self.0
    }

    /// Unwraps the value as a [`BigDecimal`].
    pub fn into_big_decimal(self) -> BigDecimal {
        self.0
    }

    /// True when the number has no fractional part.
    pub fn is_integer(&self) -> bool {
        // Normalized: a positive scale means a non-zero last fraction digit.
        self.scale() <= 0
    }

    /// True when the number is zero.
    pub fn is_zero(&self) -> bool {
        self.digits().sign() == Sign::NoSign
    }

    /// True when the number is below zero.
    pub fn is_negative(&self) -> bool {
        self.digits().sign() == Sign::Minus
    }

    /// The value as an `i64`, when it is an integer within range.
    pub fn to_i64(&self) -> Option<i64> {
        i64::try_from(self.to_bigint()?).ok()
    }

    /// The value as a `u64`, when it is a non-negative integer within range.
    pub fn to_u64(&self) -> Option<u64> {
        u64::try_from(self.to_bigint()?).ok()
    }

    /// The value as an integer of any size, when it has no fractional part
    /// and fewer than [`MAX_NUMBER_DIGITS`] digits.
    pub fn to_bigint(&self) -> Option<BigInt> {
        let scale = self.scale();
        if scale > 0 {
            return None;
        }
        let zeros = usize::try_from(scale.checked_neg()?).ok()?;
        if zeros > MAX_NUMBER_DIGITS {
            return None;
        }
        Some(self.digits().as_ref() * BigInt::from(10u8).pow(zeros as u32))
    }

    /// The nearest `f64` (correctly rounded); values beyond the `f64` range
    /// become infinities.
    pub fn to_f64(&self) -> f64 {
        let text = format!("{}e{}", self.digits(), -i128::from(self.scale()));
        text.parse::<f64>().unwrap_or(f64::NAN)
    }

    /// The value as an `f64` when that is exact (no rounding at all).
    pub fn to_f64_exact(&self) -> Option<f64> {
        // An f64's exact decimal expansion has at most 767 significant digits.
        if self.digit_count() > 800 {
            return None;
        }
        let f = self.to_f64();
        if !f.is_finite() {
            return None;
        }
        match Number::try_from(f) {
            Ok(back) if back == *self => Some(f),
            _ => None,
        }
    }

    /// Parses decimal text: an optional sign, digits with an optional
    /// decimal point, and an optional `e`/`E` exponent (`-12`, `0.5`,
    /// `1e400`, `.5`, `2.`). Infinities, NaN, hex and underscores are
    /// refused, and so are numbers whose plain form would exceed
    /// [`MAX_NUMBER_DIGITS`] digits.
    pub fn parse(text: &str) -> Result<Number, CtyError> {
        parse_decimal(text).map_err(|reason| CtyError::InvalidNumber {
            path: Path::root(),
            text: shorten(text),
            reason: reason.to_owned(),
        })
    }

    /// How many decimal digits the plain form of this number has (counting
    /// leading `0.` zeros and trailing integer zeros).
    pub fn plain_digit_count(&self) -> usize {
        plain_len(self.digit_count(), self.scale())
    }

    /// The unscaled digits (normalized).
    fn digits(&self) -> Cow<'_, BigInt> {
        self.0.as_bigint_and_scale().0
    }

    fn scale(&self) -> i64 {
        self.0.fractional_digit_count()
    }

    fn digit_count(&self) -> usize {
        usize::try_from(self.0.digits()).unwrap_or(usize::MAX)
    }
}

/// Strips trailing decimal zeros so each value has one representation;
/// zero always has scale 0.
fn normalize(mut digits: BigInt, mut scale: i64) -> (BigInt, i64) {
    if digits.sign() == Sign::NoSign {
        return (digits, 0);
    }
    let ten = BigInt::from(10u8);
    let zero = BigInt::from(0u8);
    loop {
        let rem = &digits % &ten;
        if rem != zero {
            break;
        }
        digits /= &ten;
        scale = scale.saturating_sub(1);
    }
    (digits, scale)
}

/// Digits in the plain form of a number with `d` significant digits and the
/// given scale.
fn plain_len(d: usize, scale: i64) -> usize {
    let d = d as i128;
    let s = i128::from(scale);
    let n = if s <= 0 { d - s } else { d.max(s + 1) };
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Cuts long texts for error messages.
pub(crate) fn shorten(text: &str) -> String {
    if text.len() <= 64 {
        return text.to_owned();
    }
    let mut end = 64;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn parse_decimal(text: &str) -> Result<Number, &'static str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_part = &text[int_start..i];
    let mut frac_part = "";
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        frac_part = &text[frac_start..i];
    }
    if int_part.is_empty() && frac_part.is_empty() {
        return Err("a decimal number is required");
    }
    let mut exponent: i64 = 0;
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        i += 1;
        let exp_negative = match bytes.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let exp_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            // Saturate: a huge exponent is rejected by the size check below
            // unless the mantissa is zero.
            exponent = exponent
                .saturating_mul(10)
                .saturating_add(i64::from(bytes[i] - b'0'));
            i += 1;
        }
        if i == exp_start {
            return Err("the exponent has no digits");
        }
        if exp_negative {
            exponent = -exponent;
        }
    }
    if i != bytes.len() {
        return Err("a decimal number is required");
    }

    // Significant digits without the point, leading and trailing zeros cut.
    let all: String = format!("{int_part}{frac_part}");
    let trimmed_lead = all.trim_start_matches('0');
    if trimmed_lead.is_empty() {
        return Ok(Number::zero());
    }
    let significant = trimmed_lead.trim_end_matches('0');
    let trailing_zeros = (trimmed_lead.len() - significant.len()) as i128;
    // value = significant × 10^(exponent − frac_len + trailing_zeros)
    let scale = frac_part.len() as i128 - trailing_zeros - i128::from(exponent);
    let scale = i64::try_from(scale).map_err(|_| "the number is too large or too precise")?;
    if significant.len() > MAX_NUMBER_DIGITS
        || plain_len(significant.len(), scale) > MAX_NUMBER_DIGITS
    {
        return Err("the number is too large or too precise");
    }
    let mut digits =
        BigInt::parse_bytes(significant.as_bytes(), 10).ok_or("a decimal number is required")?;
    if negative {
        digits = -digits;
    }
    Ok(Number(BigDecimal::new(digits, scale)))
}

impl FromStr for Number {
    type Err = CtyError;

    fn from_str(s: &str) -> Result<Number, CtyError> {
        Number::parse(s)
    }
}

impl fmt::Display for Number {
    /// Writes the plain decimal form, never an exponent: `100`, `-0.25`,
    /// `0.1`. This is the text Terraform itself writes for numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.digits();
        let scale = self.scale();
        if digits.sign() == Sign::Minus {
            f.write_str("-")?;
        }
        let mag = digits.magnitude().to_str_radix(10);
        if scale <= 0 {
            f.write_str(&mag)?;
            for _ in 0..(-i128::from(scale)) {
                f.write_str("0")?;
            }
            return Ok(());
        }
        let scale = usize::try_from(scale).unwrap_or(usize::MAX);
        if mag.len() > scale {
            let (a, b) = mag.split_at(mag.len() - scale);
            write!(f, "{a}.{b}")
        } else {
            f.write_str("0.")?;
            for _ in 0..(scale - mag.len()) {
                f.write_str("0")?;
            }
            f.write_str(&mag)
        }
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Number({self})")
    }
}

impl PartialEq for Number {
    fn eq(&self, other: &Number) -> bool {
        // Both sides are normalized, so equal values have equal parts.
        self.scale() == other.scale() && self.digits() == other.digits()
    }
}

impl Eq for Number {}

impl Hash for Number {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.digits().hash(state);
        self.scale().hash(state);
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Number) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Number {
    /// Numeric order.
    fn cmp(&self, other: &Number) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl Default for Number {
    fn default() -> Number {
        Number::zero()
    }
}

/// Builds a normalized number from a machine integer without big-integer
/// division.
fn from_machine_int(negative: bool, mut magnitude: u64) -> Number {
    let mut scale = 0i64;
    if magnitude != 0 {
        while magnitude % 10 == 0 {
            magnitude /= 10;
            scale -= 1;
        }
    }
    let mut digits = BigInt::from(magnitude);
    if negative {
        digits = -digits;
    }
    Number(BigDecimal::new(digits, scale))
}

impl From<i64> for Number {
    fn from(v: i64) -> Number {
        from_machine_int(v < 0, v.unsigned_abs())
    }
}

impl From<u64> for Number {
    fn from(v: u64) -> Number {
        from_machine_int(false, v)
    }
}

impl From<i32> for Number {
    fn from(v: i32) -> Number {
        Number::from(i64::from(v))
    }
}

impl From<u32> for Number {
    fn from(v: u32) -> Number {
        Number::from(u64::from(v))
    }
}

impl From<usize> for Number {
    fn from(v: usize) -> Number {
        Number::from(v as u64)
    }
}

impl From<BigInt> for Number {
    fn from(v: BigInt) -> Number {
        Number::from_parts(v, 0)
    }
}

impl From<BigDecimal> for Number {
    /// Normalizes the value; no size limit is applied.
    fn from(v: BigDecimal) -> Number {
        let (digits, scale) = v.into_bigint_and_exponent();
        Number::from_parts(digits, scale)
    }
}

impl TryFrom<f64> for Number {
    type Error = CtyError;

    /// The exact value of a finite `f64` (so `0.1f64` becomes
    /// `0.1000000000000000055511151231257827021181583404541015625`, which
    /// is what cty holds for that float too). NaN and infinities are
    /// refused.
    fn try_from(v: f64) -> Result<Number, CtyError> {
        if !v.is_finite() {
            return Err(CtyError::InvalidNumber {
                path: Path::root(),
                text: v.to_string(),
                reason: "infinities and NaN are not supported".to_owned(),
            });
        }
        if v == 0.0 {
            return Ok(Number::zero());
        }
        let bits = v.to_bits();
        let negative = bits >> 63 == 1;
        let biased = ((bits >> 52) & 0x7ff) as i64;
        let fraction = bits & ((1u64 << 52) - 1);
        let (mut mantissa, mut exp2) = if biased == 0 {
            (fraction, -1074i64)
        } else {
            (fraction | (1u64 << 52), biased - 1075)
        };
        while exp2 < 0 && mantissa & 1 == 0 {
            mantissa >>= 1;
            exp2 += 1;
        }
        let mut digits = BigInt::from(mantissa);
        let scale = if exp2 >= 0 {
            digits <<= exp2 as usize;
            0
        } else {
            // m / 2^k = m × 5^k / 10^k
            let k = (-exp2) as u32;
            digits *= BigInt::from(5u8).pow(k);
            i64::from(k)
        };
        if negative {
            digits = -digits;
        }
        Ok(Number::from_parts(digits, scale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(s: &str) -> Number {
        Number::parse(s).unwrap()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(n("1.50").to_string(), "1.5");
        assert_eq!(n("-0").to_string(), "0");
        assert_eq!(n("+12e2").to_string(), "1200");
        assert_eq!(n(".5").to_string(), "0.5");
        assert_eq!(n("2.").to_string(), "2");
        assert_eq!(n("1E-3").to_string(), "0.001");
        assert_eq!(n("0e999999999999999999999").to_string(), "0");
        assert_eq!(n("1e400").to_string().len(), 401);
        assert_eq!(n("-1e-3").to_string(), "-0.001");
        for bad in [
            "", "-", ".", "e5", "1e", "1e+", "inf", "NaN", "0x10", "1_000", " 1", "1 ", "1.2.3",
            "--1",
        ] {
            assert!(Number::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Number::parse("1e999999999").is_err());
        assert!(Number::parse("1e-20000").is_err());
        assert!(Number::parse(&"9".repeat(MAX_NUMBER_DIGITS + 1)).is_err());
        assert!(Number::parse(&"9".repeat(MAX_NUMBER_DIGITS)).is_ok());
    }

    #[test]
    fn equality_is_numeric() {
        assert_eq!(n("1.0"), n("1"));
        assert_eq!(n("100"), Number::from(100i64));
        assert!(n("0.1") < n("0.11"));
        assert!(n("-5") < n("-4.9"));
        use std::collections::hash_map::DefaultHasher;
        let h = |x: &Number| {
            let mut s = DefaultHasher::new();
            x.hash(&mut s);
            s.finish()
        };
        assert_eq!(h(&n("1.000")), h(&n("1")));
        assert_eq!(
            h(&Number::from(BigDecimal::new(BigInt::from(1000), 3))),
            h(&n("1"))
        );
    }

    #[test]
    fn integer_conversions() {
        assert_eq!(Number::from(i64::MIN).to_i64(), Some(i64::MIN));
        assert_eq!(Number::from(u64::MAX).to_u64(), Some(u64::MAX));
        assert_eq!(Number::from(u64::MAX).to_i64(), None);
        assert_eq!(n("1.5").to_i64(), None);
        assert_eq!(n("1e3").to_i64(), Some(1000));
        assert_eq!(n("-1").to_u64(), None);
        assert_eq!(n("1e30").to_i64(), None);
        assert_eq!(Number::from_parts(BigInt::from(1), i64::MIN).to_i64(), None);
        assert_eq!(Number::from_parts(BigInt::from(1), i64::MAX).to_i64(), None);
    }

    #[test]
    fn float_conversions() {
        let tenth = Number::try_from(0.1f64).unwrap();
        assert_eq!(
            tenth.to_string(),
            "0.1000000000000000055511151231257827021181583404541015625"
        );
        assert_eq!(tenth.to_f64_exact(), Some(0.1));
        assert_eq!(n("0.1").to_f64_exact(), None);
        assert_eq!(n("0.1").to_f64(), 0.1);
        assert_eq!(n("0.5").to_f64_exact(), Some(0.5));
        assert_eq!(Number::try_from(-0.0f64).unwrap(), Number::zero());
        assert_eq!(Number::try_from(1e300).unwrap().to_f64(), 1e300);
        assert_eq!(
            Number::try_from(f64::MIN_POSITIVE / 4.0)
                .unwrap()
                .to_f64_exact(),
            Some(f64::MIN_POSITIVE / 4.0)
        );
        assert!(Number::try_from(f64::NAN).is_err());
        assert!(Number::try_from(f64::INFINITY).is_err());
        assert_eq!(n("1e400").to_f64(), f64::INFINITY);
        assert_eq!(n("1e400").to_f64_exact(), None);
    }

    proptest! {
        #[test]
        fn f64_roundtrips_exactly(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let num = Number::try_from(f).unwrap();
            prop_assert_eq!(num.to_f64(), f);
            prop_assert_eq!(num.to_f64_exact(), Some(if f == 0.0 { 0.0 } else { f }));
            prop_assert!(num.plain_digit_count() <= MAX_NUMBER_DIGITS);
            prop_assert_eq!(Number::parse(&num.to_string()).unwrap(), num);
        }

        #[test]
        fn display_parse_roundtrip(int in any::<i128>(), scale in -400i64..400) {
            let num = Number::from_parts(BigInt::from(int), scale);
            prop_assert_eq!(Number::parse(&num.to_string()).unwrap(), num.clone());
            prop_assert_eq!(Number::parse(&format!("{}e{}", int, -scale)).unwrap(), num);
        }

        #[test]
        fn machine_ints_normalize_like_big_ints(i in any::<i64>(), u in any::<u64>(), z in 0u32..19) {
            let round = 10i64.pow(z % 16) * (i % 1000);
            for v in [i, round] {
                prop_assert_eq!(Number::from(v), Number::from_parts(BigInt::from(v), 0));
                prop_assert_eq!(Number::from(v).to_i64(), Some(v));
            }
            prop_assert_eq!(Number::from(u), Number::from_parts(BigInt::from(u), 0));
            prop_assert_eq!(Number::from(u).to_u64(), Some(u));
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = Number::parse(&s);
        }

        #[test]
        fn parse_numberish_never_panics(s in "[-+]?[0-9]{0,30}(\\.[0-9]{0,30})?([eE][-+]?[0-9]{0,25})?") {
            if let Ok(num) = Number::parse(&s) {
                prop_assert_eq!(Number::parse(&num.to_string()).unwrap(), num);
            }
        }
    }
}
