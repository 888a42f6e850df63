//! Org settings: the normalised shape with defaults, and the strict partial update merged section by section.

use serde_json::{json, Map, Value};

use crate::platform::validation::{parse_uuid, Invalid, Rejected};

/// The stored settings with every default filled in (false / null).
pub fn normalize(stored: &Value) -> Value {
    let get = |path: &[&str]| -> Value {
        let mut v = stored;
        for p in path {
            match v.get(p) {
                Some(next) => v = next,
                None => return Value::Null,
            }
        }
        v.clone()
    };
    let model = |section: &str, with_secret: bool| {
        let mut m = json!({
            "provider": get(&["llm", "defaults", section, "provider"]),
            "model": get(&["llm", "defaults", section, "model"]),
        });
        if let (true, Some(obj)) = (with_secret, m.as_object_mut()) {
            obj.insert(
                "secretId".into(),
                get(&["llm", "defaults", section, "secretId"]),
            );
        }
        m
    };
    let mut out = stored.as_object().cloned().unwrap_or_default();
    out.insert(
        "tools".into(),
        json!({ "shellRunEnabled": get(&["tools", "shellRunEnabled"]).as_bool().unwrap_or(false) }),
    );
    out.insert(
        "toolsets".into(),
        json!({ "defaultToolsetId": get(&["toolsets", "defaultToolsetId"]) }),
    );
    out.insert(
        "llm".into(),
        json!({ "defaults": {
            "session": model("session", false),
            "workflowAgentRun": model("workflowAgentRun", true),
            "toolsetBuilder": model("toolsetBuilder", true),
        },
        "budget": { "monthlyTokens": get(&["llm", "budget", "monthlyTokens"]) }}),
    );
    Value::Object(out)
}

fn check_keys(obj: &Map<String, Value>, allowed: &[&str], path: &str, inv: &mut Invalid) {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            inv.field(path, format!("Unrecognized key: '{k}'"));
        }
    }
}

fn obj<'a>(v: &'a Value, path: &str, inv: &mut Invalid) -> Option<&'a Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        _ => {
            inv.field(path, "Expected object");
            None
        }
    }
}

fn nullable_string(v: &Value, path: &str, max: usize, inv: &mut Invalid) {
    match v {
        Value::Null => {}
        Value::String(s) if !s.is_empty() && s.chars().count() <= max => {}
        _ => inv.field(
            path,
            format!("Expected a string of 1..{max} characters or null"),
        ),
    }
}

/// A positive whole number of tokens (at most `i64::MAX`), or null for none.
fn nullable_positive_int(v: &Value, path: &str, inv: &mut Invalid) {
    match v {
        Value::Null => {}
        Value::Number(n) if n.as_i64().is_some_and(|n| n >= 1) => {}
        _ => inv.field(
            path,
            "Expected an integer greater than or equal to 1, or null",
        ),
    }
}

fn nullable_uuid(v: &Value, path: &str, inv: &mut Invalid) {
    match v {
        Value::Null => {}
        Value::String(s) if parse_uuid(s).is_some() => {}
        _ => inv.field(path, "Expected a UUID or null"),
    }
}

/// Validates the strict partial body and merges it into `current` (section by section).
pub fn merge_update(current: &Value, body: &Value) -> Result<Value, Rejected> {
    let mut inv = Invalid::default();
    let Some(top) = body.as_object() else {
        inv.form("Expected object");
        return Err(inv
            .finish("Invalid org settings payload")
            .err()
            .unwrap_or(Rejected {
                message: "Invalid org settings payload",
                details: json!({"formErrors": ["Expected object"], "fieldErrors": {}}),
            }));
    };
    check_keys(top, &["tools", "toolsets", "llm"], "settings", &mut inv);
    if let Some(t) = top.get("tools").and_then(|v| obj(v, "tools", &mut inv)) {
        check_keys(t, &["shellRunEnabled"], "tools", &mut inv);
        if let Some(v) = t.get("shellRunEnabled") {
            if !v.is_boolean() {
                inv.field("tools.shellRunEnabled", "Expected boolean");
            }
        }
    }
    if let Some(t) = top
        .get("toolsets")
        .and_then(|v| obj(v, "toolsets", &mut inv))
    {
        check_keys(t, &["defaultToolsetId"], "toolsets", &mut inv);
        if let Some(v) = t.get("defaultToolsetId") {
            nullable_uuid(v, "toolsets.defaultToolsetId", &mut inv);
        }
    }
    if let Some(l) = top.get("llm").and_then(|v| obj(v, "llm", &mut inv)) {
        check_keys(l, &["defaults", "budget"], "llm", &mut inv);
        if let Some(b) = l.get("budget").and_then(|v| obj(v, "llm.budget", &mut inv)) {
            check_keys(b, &["monthlyTokens"], "llm.budget", &mut inv);
            if let Some(v) = b.get("monthlyTokens") {
                nullable_positive_int(v, "llm.budget.monthlyTokens", &mut inv);
            }
        }
        if let Some(d) = l
            .get("defaults")
            .and_then(|v| obj(v, "llm.defaults", &mut inv))
        {
            check_keys(
                d,
                &["session", "workflowAgentRun", "toolsetBuilder"],
                "llm.defaults",
                &mut inv,
            );
            for (section, with_secret) in [
                ("session", false),
                ("workflowAgentRun", true),
                ("toolsetBuilder", true),
            ] {
                let path = format!("llm.defaults.{section}");
                let Some(s) = d.get(section).and_then(|v| obj(v, &path, &mut inv)) else {
                    continue;
                };
                let allowed: &[&str] = if with_secret {
                    &["provider", "model", "secretId"]
                } else {
                    &["provider", "model"]
                };
                check_keys(s, allowed, &path, &mut inv);
                if let Some(v) = s.get("provider") {
                    nullable_string(v, &format!("{path}.provider"), 80, &mut inv);
                }
                if let Some(v) = s.get("model") {
                    nullable_string(v, &format!("{path}.model"), 200, &mut inv);
                }
                if let Some(v) = s.get("secretId") {
                    nullable_uuid(v, &format!("{path}.secretId"), &mut inv);
                }
            }
        }
    }
    inv.finish("Invalid org settings payload")?;
    let mut merged = normalize(current);
    deep_merge(&mut merged, body);
    Ok(merged)
}

fn deep_merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_merge() {
        let n = normalize(&json!({}));
        assert_eq!(n["tools"]["shellRunEnabled"], json!(false));
        assert_eq!(
            n["llm"]["defaults"]["workflowAgentRun"]["secretId"],
            Value::Null
        );
        let m =
            merge_update(&json!({}), &json!({"tools": {"shellRunEnabled": true}})).expect("valid");
        assert_eq!(m["tools"]["shellRunEnabled"], json!(true));
        assert!(merge_update(&json!({}), &json!({"tools": {"nope": 1}})).is_err());
        assert!(merge_update(&json!({}), &json!({"extra": 1})).is_err());
        assert!(merge_update(&json!({}), &json!([1])).is_err());
    }

    #[test]
    fn monthly_token_budget() {
        assert_eq!(
            normalize(&json!({}))["llm"]["budget"],
            json!({"monthlyTokens": null})
        );
        let m = merge_update(
            &json!({}),
            &json!({"llm": {"budget": {"monthlyTokens": 100}}}),
        )
        .expect("valid");
        assert_eq!(m["llm"]["budget"]["monthlyTokens"], json!(100));
        // The other llm sections keep their defaults, and a later update of them keeps the budget.
        assert_eq!(m["llm"]["defaults"]["session"]["model"], Value::Null);
        let m2 = merge_update(
            &m,
            &json!({"llm": {"defaults": {"session": {"model": "gpt-4o"}}}}),
        )
        .expect("valid");
        assert_eq!(normalize(&m2)["llm"]["budget"]["monthlyTokens"], json!(100));
        let cleared =
            merge_update(&m2, &json!({"llm": {"budget": {"monthlyTokens": null}}})).expect("valid");
        assert_eq!(
            normalize(&cleared)["llm"]["budget"]["monthlyTokens"],
            Value::Null
        );
        for bad in [
            json!({"llm": {"budget": {"monthlyTokens": 0}}}),
            json!({"llm": {"budget": {"monthlyTokens": -5}}}),
            json!({"llm": {"budget": {"monthlyTokens": 1.5}}}),
            json!({"llm": {"budget": {"monthlyTokens": "100"}}}),
            json!({"llm": {"budget": {"monthlyTokens": 1e20}}}),
            json!({"llm": {"budget": {"monthlyTokens": 100, "extra": 1}}}),
            json!({"llm": {"budget": 100}}),
        ] {
            let e = merge_update(&json!({}), &bad).expect_err("invalid");
            assert!(
                e.details["fieldErrors"]
                    .as_object()
                    .is_some_and(|f| f.keys().all(|k| k.starts_with("llm.budget"))),
                "{bad}: {:?}",
                e.details
            );
        }
    }
}
