//! Field-level building blocks for the DSL parsers: JSON paths, error collection, and the primitive rules
//! (strings, enums, integers, UUIDs…) whose accept/reject behaviour mirrors the original's zod schemas.

use serde_json::{Map, Value};

/// Enough to fix a document in one round trip without letting a hostile one produce a huge error body.
const MAX_ERRORS: usize = 50;

/// Collected schema errors, each already prefixed with its JSON path.
#[derive(Debug, Default)]
pub(super) struct Errors {
    messages: Vec<String>,
    omitted: usize,
}

impl Errors {
    pub(super) fn push(&mut self, path: &str, message: impl AsRef<str>) {
        if self.messages.len() < MAX_ERRORS {
            let shown = if path.is_empty() { "(root)" } else { path };
            self.messages.push(format!("{shown}: {}", message.as_ref()));
        } else {
            self.omitted += 1;
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// How many errors were recorded so far (shown or not).
    pub(super) fn len(&self) -> usize {
        self.messages.len() + self.omitted
    }

    pub(super) fn into_messages(mut self) -> Vec<String> {
        if self.omitted > 0 {
            let note = format!("(root): {} more errors not shown", self.omitted);
            self.messages.push(note);
        }
        self.messages
    }
}

/// `path.key`, or `path["key"]` when the key is not a plain identifier (zod's dot-path notation).
pub(super) fn key_path(path: &str, key: &str) -> String {
    let mut chars = key.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if !plain {
        return format!("{path}[{}]", Value::String(key.to_owned()));
    }
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn index_path(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// The JS-ish type name zod reports as "received".
pub(super) fn type_name(value: Option<&Value>) -> &'static str {
    match value {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

/// zod 4's `z.string().uuid()`: RFC 9562 layout, version 1–8, variant 8/9/a/b, plus the nil and max UUIDs
/// (the max UUID only in lower case, as in zod's pattern).
pub(super) fn is_uuid(text: &str) -> bool {
    if text == "00000000-0000-0000-0000-000000000000"
        || text == "ffffffff-ffff-ffff-ffff-ffffffffffff"
    {
        return true;
    }
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return false;
    }
    let layout_ok = bytes.iter().enumerate().all(|(i, &b)| match i {
        8 | 13 | 18 | 23 => b == b'-',
        _ => b.is_ascii_hexdigit(),
    });
    let version_ok = matches!(bytes.get(14), Some(b'1'..=b'8'));
    let variant_ok = matches!(bytes.get(19), Some(b'8' | b'9' | b'a' | b'b' | b'A' | b'B'));
    layout_ok && version_ok && variant_ok
}

/// `owner/name`: exactly one slash with something on both sides (`/^[^/]+\/[^/]+$/`).
fn is_repo_name(text: &str) -> bool {
    let mut parts = text.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(owner), Some(name), None) if !owner.is_empty() && !name.is_empty()
    )
}

/// A primitive field rule. Lengths count chars (the original counts UTF-16 units; the spec accepts chars).
#[derive(Debug, Clone, Copy)]
pub(super) enum Rule {
    Str {
        min: usize,
        max: usize,
    },
    Enum(&'static [&'static str]),
    Literal(&'static str),
    True,
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    Uuid,
    /// string | number | boolean | null
    Scalar,
    RepoName,
    /// Any JSON, kept as given.
    Any,
}

/// Any length up to `max` (the original's `.max(n)` without `.min`).
pub(super) const fn up_to(max: usize) -> Rule {
    Rule::Str { min: 0, max }
}

/// Between `min` and `max` chars.
pub(super) const fn text(min: usize, max: usize) -> Rule {
    Rule::Str { min, max }
}

/// At least one char, no upper bound.
pub(super) const NON_EMPTY: Rule = Rule::Str {
    min: 1,
    max: usize::MAX,
};

fn quoted_list(allowed: &[&str]) -> String {
    allowed
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" | ")
}

impl Rule {
    fn expected(&self) -> String {
        match self {
            Rule::Str { .. } | Rule::Uuid | Rule::RepoName => "string".into(),
            Rule::Enum(allowed) => format!("one of {}", quoted_list(allowed)),
            Rule::Literal(lit) => format!("\"{lit}\""),
            Rule::True => "true".into(),
            Rule::Int { .. } => "int".into(),
            Rule::Bool => "boolean".into(),
            Rule::Scalar => "string | number | boolean | null".into(),
            Rule::Any => "any".into(),
        }
    }

    /// Checks `value`; on success returns the normalised value (integers written without a fraction).
    pub(super) fn check(&self, errors: &mut Errors, path: &str, value: &Value) -> Option<Value> {
        let mismatch = |errors: &mut Errors| {
            let message = format!(
                "Invalid input: expected {}, received {}",
                self.expected(),
                type_name(Some(value))
            );
            errors.push(path, message);
            None
        };
        match (self, value) {
            (Rule::Any, _) => Some(value.clone()),
            (Rule::Scalar, Value::Array(_) | Value::Object(_)) => mismatch(errors),
            (Rule::Scalar, _) => Some(value.clone()),
            (Rule::Bool, Value::Bool(_)) => Some(value.clone()),
            (Rule::True, Value::Bool(true)) => Some(value.clone()),
            (Rule::True, _) => {
                errors.push(path, "Invalid literal value, expected true");
                None
            }
            (Rule::Int { min, max }, Value::Number(n)) => check_int(errors, path, n, *min, *max),
            (Rule::Enum(allowed), _) => check_enum(errors, path, value, allowed),
            (Rule::Literal(lit), _) => {
                if value.as_str() == Some(*lit) {
                    Some(value.clone())
                } else {
                    errors.push(path, format!("Invalid literal value, expected \"{lit}\""));
                    None
                }
            }
            (Rule::Str { min, max }, Value::String(s)) => check_len(errors, path, s, *min, *max),
            (Rule::Uuid, Value::String(s)) => {
                if is_uuid(s) {
                    Some(value.clone())
                } else {
                    errors.push(path, "Invalid UUID");
                    None
                }
            }
            (Rule::RepoName, Value::String(s)) => {
                if is_repo_name(s) {
                    Some(value.clone())
                } else {
                    errors.push(path, "Invalid string: must match pattern /^[^/]+\\/[^/]+$/");
                    None
                }
            }
            _ => mismatch(errors),
        }
    }

    fn missing(&self, errors: &mut Errors, path: &str) {
        let message = format!(
            "Invalid input: expected {}, received undefined",
            self.expected()
        );
        errors.push(path, message);
    }
}

fn check_len(errors: &mut Errors, path: &str, s: &str, min: usize, max: usize) -> Option<Value> {
    let len = s.chars().count();
    if len < min {
        errors.push(
            path,
            format!("Too small: expected string to have >={min} characters"),
        );
        None
    } else if len > max {
        errors.push(
            path,
            format!("Too big: expected string to have <={max} characters"),
        );
        None
    } else {
        Some(Value::String(s.to_owned()))
    }
}

fn check_enum(errors: &mut Errors, path: &str, value: &Value, allowed: &[&str]) -> Option<Value> {
    match value.as_str() {
        Some(s) if allowed.contains(&s) => Some(value.clone()),
        received => {
            let received = match received {
                Some(s) => format!("'{s}'"),
                None => type_name(Some(value)).to_owned(),
            };
            let expected = quoted_list(allowed);
            errors.push(
                path,
                format!("Invalid enum value. Expected {expected}, received {received}"),
            );
            None
        }
    }
}

fn check_int(
    errors: &mut Errors,
    path: &str,
    n: &serde_json::Number,
    min: i64,
    max: i64,
) -> Option<Value> {
    // serde_json numbers always have an f64 view; every bound here is far below 2^53, so the
    // comparison in f64 is exact for every value that can pass.
    let f = n.as_f64().unwrap_or(f64::NAN);
    if !f.is_finite() || f.fract() != 0.0 {
        errors.push(path, "Invalid input: expected int, received number");
        return None;
    }
    if f < min as f64 {
        errors.push(path, format!("Too small: expected number to be >={min}"));
        return None;
    }
    if f > max as f64 {
        errors.push(path, format!("Too big: expected number to be <={max}"));
        return None;
    }
    Some(Value::from(f as i64))
}

/// What to do when an object field is absent.
pub(super) enum Absent {
    Required,
    Skip,
    /// Store this value as is (zod's `.default(…)` short-circuits: the default is not re-validated).
    Default(Value),
}

/// A JSON object being normalised: reads from `src`, writes only known keys to `out`.
pub(super) struct Obj<'a> {
    src: &'a Map<String, Value>,
    path: String,
    out: Map<String, Value>,
}

impl<'a> Obj<'a> {
    /// Opens `value` as an object, recording an error (and returning `None`) when it is not one.
    pub(super) fn open(
        errors: &mut Errors,
        path: String,
        value: Option<&'a Value>,
    ) -> Option<Self> {
        match value {
            Some(Value::Object(src)) => Some(Obj {
                src,
                path,
                out: Map::new(),
            }),
            other => {
                let message = format!(
                    "Invalid input: expected object, received {}",
                    type_name(other)
                );
                errors.push(&path, message);
                None
            }
        }
    }

    pub(super) fn path(&self) -> &str {
        &self.path
    }

    pub(super) fn path_of(&self, key: &str) -> String {
        key_path(&self.path, key)
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.src.get(key)
    }

    /// The normalised value written so far for `key`.
    pub(super) fn out(&self, key: &str) -> Option<&Value> {
        self.out.get(key)
    }

    pub(super) fn put(&mut self, key: &str, value: Value) {
        self.out.insert(key.to_owned(), value);
    }

    pub(super) fn finish(self) -> Value {
        Value::Object(self.out)
    }

    /// A primitive field, handled per `absent` when missing; returns the stored value.
    pub(super) fn field(
        &mut self,
        errors: &mut Errors,
        key: &str,
        rule: Rule,
        absent: Absent,
    ) -> Option<Value> {
        let path = self.path_of(key);
        let value = match (self.src.get(key), absent) {
            (Some(value), _) => rule.check(errors, &path, value)?,
            (None, Absent::Required) => {
                rule.missing(errors, &path);
                return None;
            }
            (None, Absent::Skip) => return None,
            (None, Absent::Default(value)) => value,
        };
        self.put(key, value.clone());
        Some(value)
    }

    pub(super) fn req(&mut self, errors: &mut Errors, key: &str, rule: Rule) -> Option<Value> {
        self.field(errors, key, rule, Absent::Required)
    }

    pub(super) fn opt(&mut self, errors: &mut Errors, key: &str, rule: Rule) -> Option<Value> {
        self.field(errors, key, rule, Absent::Skip)
    }

    pub(super) fn or(
        &mut self,
        errors: &mut Errors,
        key: &str,
        rule: Rule,
        default: impl Into<Value>,
    ) -> Option<Value> {
        self.field(errors, key, rule, Absent::Default(default.into()))
    }

    /// A nested object field: `parse` fills the child, which is then stored under `key`.
    pub(super) fn object(
        &mut self,
        errors: &mut Errors,
        key: &str,
        absent: Absent,
        parse: impl FnOnce(&mut Obj<'a>, &mut Errors),
    ) {
        let path = self.path_of(key);
        match (self.src.get(key), absent) {
            (None, Absent::Skip) => {}
            (None, Absent::Default(value)) => self.put(key, value),
            (value, _) => {
                if let Some(mut child) = Obj::open(errors, path, value) {
                    parse(&mut child, errors);
                    self.put(key, child.finish());
                }
            }
        }
    }

    /// An array field with item count bounds; `item` normalises one element (given its path).
    pub(super) fn array(
        &mut self,
        errors: &mut Errors,
        key: &str,
        absent: Absent,
        (min, max): (usize, usize),
        mut item: impl FnMut(&mut Errors, String, &'a Value) -> Option<Value>,
    ) {
        let path = self.path_of(key);
        let items = match (self.src.get(key), absent) {
            (None, Absent::Skip) => return,
            (None, Absent::Default(value)) => return self.put(key, value),
            (Some(Value::Array(items)), _) => items,
            (other, _) => {
                let message = format!(
                    "Invalid input: expected array, received {}",
                    type_name(other)
                );
                return errors.push(&path, message);
            }
        };
        if items.len() < min {
            errors.push(
                &path,
                format!("Too small: expected array to have >={min} items"),
            );
        } else if items.len() > max {
            errors.push(
                &path,
                format!("Too big: expected array to have <={max} items"),
            );
        }
        let out = items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| item(errors, index_path(&path, i), v))
            .collect();
        self.put(key, Value::Array(out));
    }

    /// A string array field (`z.array(z.string()…)`).
    pub(super) fn strings(
        &mut self,
        errors: &mut Errors,
        key: &str,
        absent: Absent,
        item: Rule,
        max_items: usize,
    ) {
        self.array(
            errors,
            key,
            absent,
            (0, max_items),
            |errors, path, value| item.check(errors, &path, value),
        );
    }

    /// A map field (`z.record(key, value)`); `entry` normalises one value given its key and path.
    pub(super) fn record(
        &mut self,
        errors: &mut Errors,
        key: &str,
        absent: Absent,
        key_rule: Rule,
        mut entry: impl FnMut(&mut Errors, &'a str, String, &'a Value) -> Option<Value>,
    ) {
        let path = self.path_of(key);
        let entries = match (self.src.get(key), absent) {
            (None, Absent::Skip) => return,
            (None, Absent::Default(value)) => return self.put(key, value),
            (Some(Value::Object(entries)), _) => entries,
            (other, _) => {
                let message = format!(
                    "Invalid input: expected record, received {}",
                    type_name(other)
                );
                return errors.push(&path, message);
            }
        };
        let mut out = Map::new();
        for (name, value) in entries {
            let entry_path = key_path(&path, name);
            let key_ok = key_rule
                .check(errors, &entry_path, &Value::String(name.clone()))
                .is_some();
            if let Some(normalised) = entry(errors, name, entry_path, value) {
                if key_ok {
                    out.insert(name.clone(), normalised);
                }
            }
        }
        self.put(key, Value::Object(out));
    }

    /// A `string -> string` map with non-empty keys (headers, env).
    pub(super) fn string_map(&mut self, errors: &mut Errors, key: &str) {
        self.record(
            errors,
            key,
            Absent::Skip,
            NON_EMPTY,
            |errors, _, path, value| up_to(usize::MAX).check(errors, &path, value),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uuid_rule_matches_zod() {
        for ok in [
            "6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21",
            "6F1C2A9E-3B7D-4C11-BA2E-5D8F0B4C7E21",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "11111111-1111-1111-8111-111111111111",
            "11111111-1111-8111-a111-111111111111",
        ] {
            assert!(is_uuid(ok), "{ok} should be accepted");
        }
        for bad in [
            "1234",
            "",
            "11111111-1111-0111-0111-111111111111",
            "11111111-1111-0111-8111-111111111111",
            "11111111-1111-9111-8111-111111111111",
            "11111111-1111-1111-c111-111111111111",
            "11111111-1111-1111-7111-111111111111",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "6f1c2a9e3b7d4c119a2e5d8f0b4c7e21",
            "6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21 ",
            "{6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21}",
            "6f1c2a9e-3b7d-4c11-9a2e_5d8f0b4c7e21",
            "gf1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21",
        ] {
            assert!(!is_uuid(bad), "{bad} should be rejected");
        }
    }

    #[test]
    fn repo_name_needs_exactly_one_inner_slash() {
        assert!(is_repo_name("acme/api"));
        for bad in ["acme", "/api", "acme/", "a/b/c", ""] {
            assert!(!is_repo_name(bad), "{bad}");
        }
    }

    #[test]
    fn paths_use_dots_for_identifiers_and_brackets_otherwise() {
        assert_eq!(key_path("", "nodes"), "nodes");
        assert_eq!(key_path("graph.nodes", "start"), "graph.nodes.start");
        assert_eq!(key_path("graph.nodes", "is-vip"), "graph.nodes[\"is-vip\"]");
        assert_eq!(key_path("headers", ""), "headers[\"\"]");
        assert_eq!(index_path("nodes", 3), "nodes[3]");
    }

    #[test]
    fn integers_are_normalised_and_bounded() {
        let mut errors = Errors::default();
        let rule = Rule::Int {
            min: 1000,
            max: 600_000,
        };
        assert_eq!(
            rule.check(&mut errors, "t", &json!(1000.0)),
            Some(json!(1000))
        );
        assert_eq!(rule.check(&mut errors, "t", &json!(999)), None);
        assert_eq!(rule.check(&mut errors, "t", &json!(1000.5)), None);
        assert_eq!(rule.check(&mut errors, "t", &json!(u64::MAX)), None);
        assert_eq!(rule.check(&mut errors, "t", &json!("1000")), None);
        assert_eq!(errors.len(), 4);
    }

    #[test]
    fn lengths_count_chars() {
        let mut errors = Errors::default();
        let rule = text(1, 3);
        assert!(rule.check(&mut errors, "s", &json!("äöü")).is_some());
        assert!(rule.check(&mut errors, "s", &json!("äöüx")).is_none());
        assert!(rule.check(&mut errors, "s", &json!("")).is_none());
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn errors_are_capped() {
        let mut errors = Errors::default();
        for i in 0..80 {
            errors.push(&index_path("nodes", i), "bad");
        }
        assert_eq!(errors.len(), 80);
        let messages = errors.into_messages();
        assert_eq!(messages.len(), MAX_ERRORS + 1);
        assert_eq!(messages[0], "nodes[0]: bad");
        assert_eq!(messages[MAX_ERRORS], "(root): 30 more errors not shown");
    }
}
