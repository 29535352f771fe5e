//! Validators declared on attributes. Each checks a known, non-null configured value, reports
//! a diagnostic naming the attribute and what is allowed, and describes itself for the docs.

use std::sync::Arc;

use crate::cty::Value;

use super::diag::Diagnostics;
use super::path::AttrPath;

/// A check on one attribute's configured value.
pub trait Validator: Send + Sync {
    /// Markdown sentence for the docs, e.g. "Must be one of `bios`, `efi`.".
    fn description(&self) -> String;
    /// Checks `value` (never null or unknown: the caller skips those) and reports problems.
    fn validate(&self, value: &Value, path: &AttrPath, diags: &mut Diagnostics);
}

/// The value must be one of these strings.
pub fn one_of(allowed: &[&str]) -> Arc<dyn Validator> {
    Arc::new(OneOf(allowed.iter().map(|s| s.to_string()).collect()))
}

struct OneOf(Vec<String>);

impl OneOf {
    fn list(&self) -> String {
        self.0
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Validator for OneOf {
    fn description(&self) -> String {
        format!("Must be one of {}.", self.list())
    }

    fn validate(&self, value: &Value, path: &AttrPath, diags: &mut Diagnostics) {
        if let Value::String(s) = value {
            if !self.0.iter().any(|a| a == s) {
                diags.attr_error(
                    path.clone(),
                    "Invalid attribute value",
                    format!("{path} is {s:?}; allowed values are {}.", self.list()),
                );
            }
        }
    }
}

/// The string must match `pattern`; `what` says in words what is expected.
pub fn matches(pattern: &str, what: &str) -> Arc<dyn Validator> {
    Arc::new(Matches {
        re: regex::Regex::new(pattern).expect("validator pattern is a valid regex"),
        what: what.to_string(),
    })
}

struct Matches {
    re: regex::Regex,
    what: String,
}

impl Validator for Matches {
    fn description(&self) -> String {
        format!("Must be {}.", self.what)
    }

    fn validate(&self, value: &Value, path: &AttrPath, diags: &mut Diagnostics) {
        if let Value::String(s) = value {
            if !self.re.is_match(s) {
                diags.attr_error(
                    path.clone(),
                    "Invalid attribute value",
                    format!("{path} is {s:?}; it must be {}.", self.what),
                );
            }
        }
    }
}

/// The string must be a valid regular expression (Rust `regex` syntax).
pub fn regex_syntax() -> Arc<dyn Validator> {
    Arc::new(RegexSyntax)
}

struct RegexSyntax;

impl Validator for RegexSyntax {
    fn description(&self) -> String {
        "Must be a valid regular expression.".to_string()
    }

    fn validate(&self, value: &Value, path: &AttrPath, diags: &mut Diagnostics) {
        if let Value::String(s) = value {
            if let Err(e) = regex::Regex::new(s) {
                diags.attr_error(
                    path.clone(),
                    "Invalid regular expression",
                    format!("{path} is not a valid regular expression: {e}"),
                );
            }
        }
    }
}

/// The number must be a whole number in `min..=max`.
pub fn int_between(min: i64, max: i64) -> Arc<dyn Validator> {
    Arc::new(IntBetween { min, max })
}

struct IntBetween {
    min: i64,
    max: i64,
}

impl Validator for IntBetween {
    fn description(&self) -> String {
        format!("Must be a whole number from {} to {}.", self.min, self.max)
    }

    fn validate(&self, value: &Value, path: &AttrPath, diags: &mut Diagnostics) {
        if let Value::Number(n) = value {
            match n.to_i64() {
                Some(i) if (self.min..=self.max).contains(&i) => {}
                _ => diags.attr_error(
                    path.clone(),
                    "Invalid attribute value",
                    format!(
                        "{path} is {n}; it must be a whole number from {} to {}.",
                        self.min, self.max
                    ),
                ),
            }
        }
    }
}

/// The string must be a duration such as `"90s"`, `"10m"` or `"1h30m"`, at most
/// [`crate::units::MAX_DURATION`].
pub fn duration() -> Arc<dyn Validator> {
    Arc::new(Duration)
}

struct Duration;

impl Validator for Duration {
    fn description(&self) -> String {
        format!(
            "Must be a duration such as `\"90s\"`, `\"10m\"` or `\"1h30m\"`, at most `\"{}h\"`.",
            crate::units::MAX_DURATION.as_secs() / 3600
        )
    }

    fn validate(&self, value: &Value, path: &AttrPath, diags: &mut Diagnostics) {
        if let Value::String(s) = value {
            if let Err(why) = crate::units::parse_duration(s) {
                diags.attr_error(
                    path.clone(),
                    "Invalid duration",
                    format!("{path} is {s:?}: {why}. Use numbers with units (ms, s, m, h, d), e.g. \"90s\" or \"1h30m\"."),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(v: &Arc<dyn Validator>, value: Value) -> Diagnostics {
        let mut d = Diagnostics::new();
        v.validate(&value, &AttrPath::attr("x"), &mut d);
        d
    }

    #[test]
    fn duration_refuses_huge_values_naming_the_attribute() {
        let v = duration();
        assert!(!run(&v, Value::String("90s".into())).has_errors());
        let d = run(&v, Value::String("99999999999999999999h".into()));
        assert!(d.has_errors(), "{d}");
        assert_eq!(d.0[0].path, Some(AttrPath::attr("x")));
        assert!(d.0[0].detail.starts_with("x is "), "{d}");
        assert!(d.0[0].detail.contains("maximum of 8760h"), "{d}");
    }

    #[test]
    fn one_of_names_the_allowed_values() {
        let v = one_of(&["bios", "efi"]);
        assert!(!run(&v, Value::String("efi".into())).has_errors());
        let d = run(&v, Value::String("uefi".into()));
        assert!(d.0[0].detail.contains("`bios`, `efi`"), "{d}");
        assert_eq!(d.0[0].path, Some(AttrPath::attr("x")));
    }

    #[test]
    fn int_between_rejects_fractions_and_out_of_range() {
        let v = int_between(1, 10);
        assert!(!run(&v, Value::Number(5i64.into())).has_errors());
        assert!(run(&v, Value::Number(11i64.into())).has_errors());
        assert!(run(&v, Value::Number("1.5".parse().unwrap())).has_errors());
    }

    #[test]
    fn duration_accepts_go_style() {
        let v = duration();
        assert!(!run(&v, Value::String("1h30m".into())).has_errors());
        assert!(run(&v, Value::String("soon".into())).has_errors());
    }

    #[test]
    fn matches_explains_itself() {
        let v = matches("^[a-z]+$", "lower-case letters");
        assert!(run(&v, Value::String("A".into())).0[0]
            .detail
            .contains("lower-case letters"));
    }
}
