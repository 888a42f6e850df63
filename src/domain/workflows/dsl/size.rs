//! The size limits of a new document, checked before it is parsed: node and edge counts as they appear
//! (v2 `nodes`, v3 `graph.nodes` / `graph.edges`) and the length of its compact JSON.

use serde_json::Value;

use super::model::{DslError, Limits};

pub(super) fn check(doc: &Value, limits: &Limits) -> Result<(), DslError> {
    let count = |v: Option<&Value>| match v {
        Some(Value::Array(a)) => a.len(),
        Some(Value::Object(o)) => o.len(),
        _ => 0,
    };
    let nodes = count(doc.get("nodes")).max(count(doc.get("graph").and_then(|g| g.get("nodes"))));
    if nodes > limits.max_nodes {
        return Err(too_large("nodes", limits.max_nodes, nodes));
    }
    let edges = count(doc.get("graph").and_then(|g| g.get("edges")));
    if edges > limits.max_edges {
        return Err(too_large("edges", limits.max_edges, edges));
    }
    let bytes = json_len(doc);
    if bytes > limits.max_bytes {
        return Err(too_large("bytes", limits.max_bytes, bytes));
    }
    Ok(())
}

fn too_large(limit: &'static str, max: usize, actual: usize) -> DslError {
    DslError::TooLarge { limit, max, actual }
}

/// The length of `v` as compact JSON, counted without building the text.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, and a `Value` always serializes.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_name_what_they_refuse() {
        let limits = Limits {
            max_nodes: 2,
            max_edges: 1,
            max_bytes: 200,
        };
        let v2 = |n: usize| json!({"version": "v2", "nodes": (0..n).map(|i| json!({"id": format!("n{i}")})).collect::<Vec<_>>()});
        assert!(check(&v2(2), &limits).is_ok());
        assert_eq!(
            check(&v2(3), &limits),
            Err(DslError::TooLarge {
                limit: "nodes",
                max: 2,
                actual: 3
            })
        );
        let v3 =
            json!({"version": "v3", "graph": {"nodes": {"a": {}, "b": {}}, "edges": [{}, {}]}});
        assert!(matches!(
            check(&v3, &limits),
            Err(DslError::TooLarge { limit: "edges", .. })
        ));
        let big = json!({"version": "v2", "nodes": [{"id": "x".repeat(300)}]});
        assert!(matches!(
            check(&big, &limits),
            Err(DslError::TooLarge { limit: "bytes", .. })
        ));
        assert_eq!(json_len(&json!({"a": [1, "b"]})), r#"{"a":[1,"b"]}"#.len());
    }
}
