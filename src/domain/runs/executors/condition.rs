//! v3 `condition` evaluation (spec 3.5), reproducing the original's JavaScript semantics: a dot path into
//! the run input, strict equality, and `Number()` coercion for the ordering operators.

use std::borrow::Cow;

use serde_json::{json, Value};

use crate::domain::workflows::dsl::spec::{Condition, ConditionOp};

const INVALID: &str = "INVALID_CONDITION_CONFIG";

/// `{"result": bool, "explain": {path, op, expected, actualPresent, actualType}}`, or
/// `INVALID_CONDITION_CONFIG` when the node has no config (the DSL allows that; the original fails it).
pub fn evaluate(config: Option<&Condition>, run_input: &Value) -> Result<Value, String> {
    let cfg = config.ok_or(INVALID)?;
    // A missing `value` is JS `undefined`; a present `null` is `null`.
    let expected = cfg.value.as_ref();
    let actual = lookup(run_input, &cfg.path);
    let actual = actual.as_deref();
    let result = match cfg.op {
        ConditionOp::Exists => !matches!(actual, None | Some(Value::Null)),
        ConditionOp::Eq => strict_eq(actual, expected),
        ConditionOp::Neq => !strict_eq(actual, expected),
        ConditionOp::Contains => contains(actual, expected),
        op @ (ConditionOp::Gt | ConditionOp::Gte | ConditionOp::Lt | ConditionOp::Lte) => {
            compare(op, to_number(actual), to_number(expected))
        }
    };
    Ok(json!({
        "result": result,
        "explain": {
            "path": cfg.path,
            "op": cfg.op,
            "expected": expected.cloned().unwrap_or(Value::Null),
            "actualPresent": actual.is_some(),
            "actualType": js_type(actual),
        }
    }))
}

/// Walks `path` (minus a leading `$.`, split on `.`, empty parts dropped) like JS property access on
/// parsed JSON: objects by own key, arrays by canonical index or `length`; anything else is `undefined`.
fn lookup<'a>(input: &'a Value, path: &str) -> Option<Cow<'a, Value>> {
    let path = path.strip_prefix("$.").unwrap_or(path);
    let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    let mut cur = input;
    for (i, part) in parts.iter().enumerate() {
        cur = match cur {
            Value::Object(m) => m.get(*part)?,
            Value::Array(a) if *part == "length" => {
                // A number has no properties: only the last part may be `length`.
                return (i + 1 == parts.len()).then(|| Cow::Owned(json!(a.len())));
            }
            Value::Array(a) => a.get(array_index(part)?)?,
            _ => return None,
        };
    }
    Some(Cow::Borrowed(cur))
}

/// JS array index keys are canonical decimal integers: `"0"`, `"12"`, not `"01"`, `"+1"` or `"1.0"`.
fn array_index(part: &str) -> Option<usize> {
    let canonical = part == "0"
        || (!part.starts_with('0') && !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    if canonical {
        part.parse().ok()
    } else {
        None
    }
}

/// JS `===` on parsed JSON (`None` is `undefined`): objects and arrays are never equal to another value,
/// since every parse creates new references.
fn strict_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(Value::Null), Some(Value::Null)) => true,
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x == y,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
        (Some(Value::String(x)), Some(Value::String(y))) => x == y,
        _ => false,
    }
}

fn contains(actual: Option<&Value>, expected: Option<&Value>) -> bool {
    match (actual, expected) {
        (Some(Value::String(s)), Some(Value::String(needle))) => s.contains(needle.as_str()),
        (Some(Value::Array(items)), _) => items.iter().any(|v| strict_eq(Some(v), expected)),
        _ => false,
    }
}

fn compare(op: ConditionOp, a: f64, b: f64) -> bool {
    if !a.is_finite() || !b.is_finite() {
        return false;
    }
    match op {
        ConditionOp::Gt => a > b,
        ConditionOp::Gte => a >= b,
        ConditionOp::Lt => a < b,
        _ => a <= b,
    }
}

fn js_type(v: Option<&Value>) -> &'static str {
    match v {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
        Some(Value::String(_)) => "string",
        Some(Value::Number(_)) => "number",
        Some(Value::Bool(_)) => "boolean",
    }
}

/// JS `Number(v)`.
fn to_number(v: Option<&Value>) -> f64 {
    match v {
        None => f64::NAN,
        Some(Value::Null) => 0.0,
        Some(Value::Bool(b)) => f64::from(u8::from(*b)),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => string_to_number(s),
        Some(Value::Array(items)) => array_to_number(items),
        Some(Value::Object(_)) => f64::NAN,
    }
}

/// `Number([..])` is `Number(arr.join(","))`: two or more elements always leave a comma (NaN); one
/// element converts as its string form (`null` joins as `""`, `true` as `"true"`).
fn array_to_number(items: &[Value]) -> f64 {
    match items {
        [] => 0.0,
        [only] => match only {
            Value::Null => 0.0,
            Value::Bool(_) => f64::NAN,
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            Value::String(s) => string_to_number(s),
            Value::Array(inner) => array_to_number(inner),
            Value::Object(_) => f64::NAN,
        },
        _ => f64::NAN,
    }
}

/// ECMAScript WhiteSpace and LineTerminator (Rust's `is_whitespace` differs on U+0085 and U+FEFF).
fn is_js_space(c: char) -> bool {
    (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}'
}

/// ECMAScript StringToNumber.
fn string_to_number(s: &str) -> f64 {
    let t = s.trim_matches(is_js_space);
    if t.is_empty() {
        return 0.0;
    }
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        let lower = t.get(..2).map(str::to_ascii_lowercase);
        if lower.as_deref() == Some(prefix) {
            return t
                .get(2..)
                .map_or(f64::NAN, |digits| radix_to_number(digits, radix));
        }
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    if is_decimal_literal(t) {
        t.parse().unwrap_or(f64::NAN)
    } else {
        f64::NAN
    }
}

fn radix_to_number(digits: &str, radix: u32) -> f64 {
    if digits.is_empty() {
        return f64::NAN;
    }
    let mut acc = 0f64;
    for c in digits.chars() {
        match c.to_digit(radix) {
            Some(d) => acc = acc * f64::from(radix) + f64::from(d),
            None => return f64::NAN,
        }
    }
    acc
}

/// `[+-]? (digits ['.' digits?] | '.' digits) ([eE] [+-]? digits)?` — what Rust's parser would also
/// accept minus its `inf`/`nan` spellings.
fn is_decimal_literal(t: &str) -> bool {
    let b = t.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let int_digits = digits(&mut i);
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = digits(&mut i);
    }
    if int_digits + frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed config, as the DSL reads it.
    fn typed(cfg: &Value) -> Result<Condition, serde_json::Error> {
        serde_json::from_value(cfg.clone())
    }

    fn eval(cfg: Value, input: Value) -> Value {
        evaluate(Some(&typed(&cfg).unwrap()), &input).unwrap()
    }

    fn result(cfg: Value, input: &Value) -> bool {
        evaluate(Some(&typed(&cfg).unwrap()), input).unwrap()["result"]
            .as_bool()
            .unwrap()
    }

    /// No config fails the node; a malformed one cannot even be stored (the typed read refuses it).
    #[test]
    fn invalid_configs() {
        assert_eq!(
            evaluate(None, &json!({})),
            Err("INVALID_CONDITION_CONFIG".to_string())
        );
        for cfg in [
            json!(null),
            json!("x"),
            json!([]),
            json!({}),
            json!({"path": "a"}),
            json!({"op": "eq"}),
            json!({"path": 1, "op": "eq"}),
            json!({"path": "a", "op": null}),
        ] {
            assert!(typed(&cfg).is_err(), "{cfg:?}");
        }
    }

    #[test]
    fn output_shape() {
        let out = eval(
            json!({"path": "$.user.age", "op": "gte", "value": 18}),
            json!({"user": {"age": 21}}),
        );
        assert_eq!(
            out,
            json!({"result": true, "explain": {"path": "$.user.age", "op": "gte", "expected": 18,
                "actualPresent": true, "actualType": "number"}})
        );
        let out = eval(json!({"path": "missing", "op": "exists"}), json!({}));
        assert_eq!(
            out,
            json!({"result": false, "explain": {"path": "missing", "op": "exists", "expected": null,
                "actualPresent": false, "actualType": "undefined"}})
        );
        let out = eval(
            json!({"path": "a", "op": "eq", "value": null}),
            json!({"a": null}),
        );
        assert_eq!(out["result"], true);
        assert_eq!(out["explain"]["actualType"], "null");
        assert_eq!(out["explain"]["actualPresent"], true);
    }

    #[test]
    fn actual_types() {
        let input = json!({"s": "x", "n": 1.5, "b": false, "a": [1], "o": {}, "z": null});
        for (path, ty) in [
            ("s", "string"),
            ("n", "number"),
            ("b", "boolean"),
            ("a", "array"),
            ("o", "object"),
            ("z", "null"),
            ("nope", "undefined"),
        ] {
            let out = eval(json!({"path": path, "op": "exists"}), input.clone());
            assert_eq!(out["explain"]["actualType"], ty, "{path}");
        }
    }

    #[test]
    fn path_walk() {
        let input = json!({"a": {"b": [10, {"c": "deep"}, [7]], "": "empty-key", "x.y": 1},
                           "n": null, "s": "str", "arr": [1, 2, 3]});
        let get = |p: &str| lookup(&input, p).map(Cow::into_owned);
        assert_eq!(get("a.b.0"), Some(json!(10)));
        assert_eq!(get("$.a.b.1.c"), Some(json!("deep")));
        assert_eq!(get("a..b...2.0"), Some(json!(7)), "empty parts dropped");
        assert_eq!(get("a.b.01"), None, "non-canonical index");
        assert_eq!(get("a.b.+1"), None);
        assert_eq!(get("a.b.-0"), None);
        assert_eq!(get("a.b.9"), None);
        assert_eq!(get("arr.length"), Some(json!(3)));
        assert_eq!(get("arr.length.x"), None);
        assert_eq!(get("s.length"), None, "strings are not objects");
        assert_eq!(get("n.x"), None, "null on the way");
        assert_eq!(get("s.0"), None);
        assert_eq!(get("a.x.y"), None, "dots always split");
        assert_eq!(get(""), Some(input.clone()), "empty path is the input");
        assert_eq!(get("$."), Some(input.clone()));
        assert_eq!(get("$"), None, "only `$.` is stripped");
        assert_eq!(get("$.$.a"), None);
        assert_eq!(lookup(&json!(5), "a"), None);
        assert_eq!(lookup(&json!(null), "a"), None);
    }

    #[test]
    fn exists_eq_neq() {
        let input = json!({"z": null, "f": false, "zero": 0, "s": "1", "n": 1, "f1": 1.0, "o": {"k": 1}, "a": [1]});
        let r = |cfg: Value| result(cfg, &input);
        assert!(!r(json!({"path": "z", "op": "exists"})));
        assert!(r(json!({"path": "f", "op": "exists"})));
        assert!(r(json!({"path": "zero", "op": "exists"})));
        assert!(!r(json!({"path": "nope", "op": "exists"})));
        assert!(r(json!({"path": "n", "op": "eq", "value": 1})));
        assert!(
            r(json!({"path": "f1", "op": "eq", "value": 1})),
            "1.0 === 1"
        );
        assert!(
            !r(json!({"path": "s", "op": "eq", "value": 1})),
            "no coercion"
        );
        assert!(!r(json!({"path": "n", "op": "eq", "value": "1"})));
        assert!(!r(json!({"path": "z", "op": "eq"})), "null !== undefined");
        assert!(
            r(json!({"path": "nope", "op": "eq"})),
            "undefined === undefined"
        );
        assert!(!r(json!({"path": "nope", "op": "eq", "value": null})));
        assert!(r(json!({"path": "f", "op": "eq", "value": false})));
        assert!(
            !r(json!({"path": "o", "op": "eq", "value": {"k": 1}})),
            "references differ"
        );
        assert!(r(json!({"path": "o", "op": "neq", "value": {"k": 1}})));
        assert!(r(json!({"path": "nope", "op": "neq", "value": null})));
        assert!(!r(json!({"path": "nope", "op": "neq"})));
        assert!(r(json!({"path": "s", "op": "neq", "value": 1})));
    }

    #[test]
    fn contains_op() {
        let input = json!({"s": "hello world", "a": [1, "x", null, {"k": 1}, true], "n": 12});
        let r = |cfg: Value| result(cfg, &input);
        assert!(r(json!({"path": "s", "op": "contains", "value": "o w"})));
        assert!(r(json!({"path": "s", "op": "contains", "value": ""})));
        assert!(!r(json!({"path": "s", "op": "contains", "value": "W"})));
        assert!(!r(json!({"path": "s", "op": "contains", "value": 1})));
        assert!(!r(json!({"path": "s", "op": "contains"})));
        assert!(r(json!({"path": "a", "op": "contains", "value": 1})));
        assert!(r(json!({"path": "a", "op": "contains", "value": 1.0})));
        assert!(r(json!({"path": "a", "op": "contains", "value": "x"})));
        assert!(r(json!({"path": "a", "op": "contains", "value": null})));
        assert!(r(json!({"path": "a", "op": "contains", "value": true})));
        assert!(!r(json!({"path": "a", "op": "contains", "value": "1"})));
        assert!(
            !r(json!({"path": "a", "op": "contains"})),
            "undefined not in a JSON array"
        );
        assert!(!r(
            json!({"path": "a", "op": "contains", "value": {"k": 1}})
        ));
        assert!(!r(json!({"path": "n", "op": "contains", "value": 1})));
        assert!(!r(json!({"path": "nope", "op": "contains", "value": 1})));
    }

    #[test]
    fn ordering_ops_with_number_coercion() {
        let input = json!({"n": 5, "s": " 5 ", "hex": "0x10", "t": true, "z": null, "e": "",
            "a1": [7], "a2": [1, 2], "a0": [], "o": {}, "bad": "5px", "inf": "Infinity", "exp": "1e3"});
        let r = |path: &str, op: &str, value: Value| {
            result(json!({"path": path, "op": op, "value": value}), &input)
        };
        assert!(r("n", "gt", json!(4)));
        assert!(!r("n", "gt", json!(5)));
        assert!(r("n", "gte", json!(5)));
        assert!(r("n", "lt", json!(5.5)));
        assert!(r("n", "lte", json!(5)));
        assert!(r("s", "gte", json!(5)), "whitespace trimmed");
        assert!(r("n", "lte", json!("5")), "expected coerced too");
        assert!(r("hex", "gt", json!(15)));
        assert!(r("t", "gte", json!(1)), "true -> 1");
        assert!(r("z", "lt", json!(1)), "null -> 0");
        assert!(r("z", "gte", json!(false)), "false -> 0");
        assert!(r("e", "lte", json!(0)), "'' -> 0");
        assert!(r("a1", "gt", json!(6)), "[7] -> 7");
        assert!(r("a0", "gte", json!(0)), "[] -> 0");
        assert!(!r("a2", "gt", json!(0)), "[1,2] -> NaN");
        assert!(!r("a2", "lte", json!(0)));
        assert!(!r("o", "gt", json!(-1)), "{{}} -> NaN");
        assert!(!r("bad", "gt", json!(0)));
        assert!(!r("inf", "gt", json!(0)), "non-finite -> false");
        assert!(r("exp", "gte", json!(1000)));
        assert!(!r("nope", "lt", json!(1)), "undefined -> NaN");
        assert!(
            !result(json!({"path": "n", "op": "gt"}), &input),
            "absent value -> NaN"
        );
        assert!(
            result(json!({"path": "n", "op": "gt", "value": null}), &input),
            "null -> 0"
        );
    }

    /// The original evaluated an unknown op to `false`; here it cannot reach evaluation at all.
    #[test]
    fn unknown_op_is_refused() {
        assert!(typed(&json!({"path": "a", "op": "matches", "value": 1})).is_err());
    }

    #[test]
    fn string_to_number_rules() {
        let cases: &[(&str, f64)] = &[
            ("", 0.0),
            ("   ", 0.0),
            ("\u{feff}\t\n 12 \u{a0}", 12.0),
            ("0x1A", 26.0),
            ("0X1a", 26.0),
            ("0o17", 15.0),
            ("0b101", 5.0),
            ("1.5", 1.5),
            (".5", 0.5),
            ("5.", 5.0),
            ("-2", -2.0),
            ("+2", 2.0),
            ("1e3", 1000.0),
            ("1E-2", 0.01),
            ("-0", 0.0),
            ("007", 7.0),
        ];
        for (s, n) in cases {
            assert_eq!(string_to_number(s), *n, "{s:?}");
        }
        for s in [
            "abc", "1,2", "0x", "0xg", "-0x10", "1e", "e5", ".", "+", "1_000", "inf", "nan", "NaN",
            "infinity", "1.2.3", "\u{85}1", "5px", "--1",
        ] {
            assert!(string_to_number(s).is_nan(), "{s:?}");
        }
        assert_eq!(string_to_number("Infinity"), f64::INFINITY);
        assert_eq!(string_to_number("-Infinity"), f64::NEG_INFINITY);
        assert_eq!(string_to_number("+Infinity"), f64::INFINITY);
    }

    #[test]
    fn array_and_value_coercion() {
        assert_eq!(to_number(Some(&json!([]))), 0.0);
        assert_eq!(to_number(Some(&json!([null]))), 0.0);
        assert_eq!(to_number(Some(&json!([[" 3 "]]))), 3.0);
        assert_eq!(to_number(Some(&json!([[]]))), 0.0);
        assert!(to_number(Some(&json!([true]))).is_nan());
        assert!(to_number(Some(&json!([{}]))).is_nan());
        assert!(to_number(Some(&json!([[1, 2]]))).is_nan());
        assert!(to_number(Some(&json!(["", ""]))).is_nan());
        assert!(to_number(None).is_nan());
        assert_eq!(to_number(Some(&json!(false))), 0.0);
    }
}
