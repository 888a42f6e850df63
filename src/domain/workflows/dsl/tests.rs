//! DSL parser tests: the spec's examples (1.8), the original's `packages/workflow` test cases (spec 8),
//! and the rules our implementation adds.

use serde_json::{json, Value};

use super::*;

const SECRET: &str = "6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21";
const NIL: &str = "00000000-0000-0000-0000-000000000000";

fn v2(nodes: Value) -> Value {
    json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": nodes})
}

fn v3(nodes: Value, edges: Value) -> Value {
    json!({"version": "v3", "trigger": {"type": "trigger.manual"}, "graph": {"nodes": nodes, "edges": edges}})
}

fn ok(doc: &Value) -> WorkflowDsl {
    match parse(doc) {
        Ok(parsed) => parsed,
        Err(err) => panic!("expected {doc} to parse, got {err:?}"),
    }
}

fn invalid(doc: &Value) -> Vec<String> {
    match parse(doc) {
        Err(DslError::Invalid(messages)) => messages,
        other => panic!("expected {doc} to be invalid, got {other:?}"),
    }
}

/// Asserts the document is rejected with a message at `path` (the message starts with `path: `).
fn rejected_at(doc: &Value, path: &str) -> Vec<String> {
    let messages = invalid(doc);
    let prefix = format!("{path}: ");
    assert!(
        messages.iter().any(|m| m.starts_with(&prefix)),
        "no error at {path}: {messages:?}"
    );
    messages
}

fn graph_error(doc: &Value) -> (String, Option<String>, Option<String>) {
    match parse(doc) {
        Err(DslError::Graph {
            code,
            node_id,
            edge_id,
            ..
        }) => (code.to_owned(), node_id, edge_id),
        other => panic!("expected a graph error for {doc}, got {other:?}"),
    }
}

fn config_of(parsed: &WorkflowDsl, index: usize) -> &Value {
    &parsed.normalized["nodes"][index]["config"]
}

fn http(id: &str) -> Value {
    json!({"id": id, "type": "http.request"})
}

fn agent_run_minimal_normalised() -> Value {
    json!({
        "llm": {"provider": "openai", "model": "gpt-4.1-mini", "auth": {"fallbackToEnv": true}},
        "execution": {"mode": "gateway"},
        "prompt": {"instructions": "Summarise"},
        "tools": {"allow": [], "execution": "cloud"},
        "limits": {"maxTurns": 8, "maxToolCalls": 20, "timeoutMs": 60000, "maxOutputChars": 50000,
                   "maxRuntimeChars": 200000},
        "output": {"mode": "text"}
    })
}

fn compact_limits() -> Value {
    json!({"maxTurns": 2, "maxToolCalls": 0, "timeoutMs": 1000, "maxOutputChars": 1000, "maxRuntimeChars": 2048})
}

/// The original's agent.run test shape with `llm` and extra config keys swapped in.
fn agent_run_with(llm: Value, extra: Value) -> Value {
    let mut config = json!({
        "llm": llm,
        "prompt": {"instructions": "Say hello."},
        "tools": {"allow": [], "execution": "cloud"},
        "limits": compact_limits(),
        "output": {"mode": "text"}
    });
    if let (Value::Object(config), Value::Object(extra)) = (&mut config, extra) {
        config.extend(extra);
    }
    v2(json!([{"id": "n1", "type": "agent.run", "config": config}]))
}

// ---- 1.8 examples: valid ----------------------------------------------------------------------

#[test]
fn example_smallest_v2_is_stored_unchanged() {
    let doc = json!({"version":"v2","trigger":{"type":"trigger.manual"},"nodes":[{"id":"ping","type":"http.request"}]});
    let parsed = ok(&doc);
    assert_eq!(parsed.normalized, doc);
    let expected = Node {
        id: "ping".into(),
        spec: NodeSpec::HttpRequest(None),
    };
    assert_eq!(parsed.plan, Plan::Sequence(vec![expected]));
}

#[test]
fn example_remote_execution_keeps_selector_as_given_and_adds_no_pool() {
    let doc = json!({"version":"v2","trigger":{"type":"trigger.cron","config":{"cron":"0 * * * *"}},"nodes":[
     {"id":"file-bug","type":"connector.action","config":{"connectorId":"github","actionId":"issue.create",
      "input":{"repo":"acme/api","title":"Nightly failed"},"auth":{"secretId":SECRET},
      "execution":{"mode":"executor","selector":{"pool":"byon","tag":"eu"}}}},
     {"id":"build","type":"agent.execute","config":{"execution":{},"task":{"type":"shell","script":"make test"},
      "sandbox":{"backend":"docker","network":"none","timeoutMs":120000}}}]});
    let parsed = ok(&doc);
    let mut expected = doc.clone();
    expected["nodes"][1]["config"]["execution"] = json!({"mode": "executor"});
    assert_eq!(parsed.normalized, expected);
    let Plan::Sequence(nodes) = &parsed.plan else {
        panic!("v2 gives a sequence")
    };
    let ids: Vec<_> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["file-bug", "build"]);
    assert!(nodes.iter().all(Node::is_remote));
}

#[test]
fn example_minimal_agent_run_gets_every_default() {
    let doc = v2(
        json!([{"id":"triage","type":"agent.run","config":{"llm":{},"prompt":{"instructions":"Summarise"}}}]),
    );
    let parsed = ok(&doc);
    assert_eq!(config_of(&parsed, 0), &agent_run_minimal_normalised());
}

#[test]
fn example_v3_condition_graph_is_stored_unchanged() {
    let doc = json!({"version":"v3","trigger":{"type":"trigger.manual"},"graph":{"nodes":{
      "start":{"id":"start","type":"http.request"},
      "is-vip":{"id":"is-vip","type":"condition","config":{"path":"$.customer.tier","op":"eq","value":"vip"}},
      "fast":{"id":"fast","type":"http.request"},"slow":{"id":"slow","type":"http.request"}},
     "edges":[{"id":"a","from":"start","to":"is-vip"},{"id":"b","from":"is-vip","to":"fast","kind":"cond_true"},
              {"id":"c","from":"is-vip","to":"slow","kind":"cond_false"}]}});
    let parsed = ok(&doc);
    assert_eq!(parsed.normalized, doc);
    let Plan::Graph(graph) = &parsed.plan else {
        panic!("v3 gives a graph")
    };
    let keys: Vec<_> = graph.nodes.keys().map(String::as_str).collect();
    assert_eq!(keys, ["fast", "is-vip", "slow", "start"]);
    let edge = |id: &str, from: &str, to: &str, kind| Edge {
        id: id.into(),
        from: from.into(),
        to: to.into(),
        kind,
    };
    let expected = vec![
        edge("a", "start", "is-vip", EdgeKind::Always),
        edge("b", "is-vip", "fast", EdgeKind::CondTrue),
        edge("c", "is-vip", "slow", EdgeKind::CondFalse),
    ];
    assert_eq!(graph.edges, expected);
    let condition = &graph.nodes["is-vip"];
    assert_eq!(condition.node_type(), NodeType::Condition);
    assert_eq!(
        condition.spec,
        NodeSpec::Condition(Some(spec::Condition {
            path: "$.customer.tier".into(),
            op: spec::ConditionOp::Eq,
            value: Some(json!("vip")),
        }))
    );
}

// ---- 1.8 examples: invalid ----------------------------------------------------------------------

#[test]
fn example_v2_without_nodes_is_invalid() {
    rejected_at(&v2(json!([])), "nodes");
}

#[test]
fn example_lower_case_method_is_invalid() {
    let doc = v2(json!([{"id":"x","type":"http.request","config":{"method":"get","url":"/"}}]));
    let messages = rejected_at(&doc, "nodes[0].config.method");
    assert!(messages[0].contains("Invalid enum value"), "{messages:?}");
}

#[test]
fn example_vertex_without_secret_is_invalid() {
    let doc = v2(
        json!([{"id":"x","type":"agent.run","config":{"llm":{"provider":"vertex"},"prompt":{"instructions":"hi"}}}]),
    );
    rejected_at(&doc, "nodes[0].config.llm.auth.secretId");
}

#[test]
fn example_agent_run_only_runs_on_the_gateway() {
    for mode in ["cloud", "executor"] {
        let doc = v2(
            json!([{"id":"x","type":"agent.run","config":{"llm":{},"prompt":{"instructions":"hi"},"execution":{"mode":mode}}}]),
        );
        rejected_at(&doc, "nodes[0].config.execution.mode");
    }
}

#[test]
fn example_connector_action_needs_a_secret() {
    let doc = v2(
        json!([{"id":"x","type":"connector.action","config":{"connectorId":"github","actionId":"issue.create"}}]),
    );
    rejected_at(&doc, "nodes[0].config.auth");
}

#[test]
fn example_webhook_needs_a_token() {
    let mut doc = v2(json!([http("a")]));
    doc["trigger"] = json!({"type":"trigger.webhook"});
    rejected_at(&doc, "trigger.config");
    doc["trigger"] = json!({"type":"trigger.webhook","config":{}});
    rejected_at(&doc, "trigger.config.token");
    doc["trigger"] = json!({"type":"trigger.webhook","config":{"token":""}});
    rejected_at(&doc, "trigger.config.token");
    doc["trigger"] = json!({"type":"trigger.webhook","config":{"token":"t0k","extra":1}});
    assert_eq!(
        ok(&doc).normalized["trigger"],
        json!({"type":"trigger.webhook","config":{"token":"t0k"}})
    );
}

#[test]
fn example_condition_value_must_be_scalar() {
    for value in [json!({"k": 1}), json!([1])] {
        let doc = v2(
            json!([{"id":"x","type":"condition","config":{"path":"a","op":"eq","value":value}}]),
        );
        rejected_at(&doc, "nodes[0].config.value");
    }
    for value in [json!("vip"), json!(3.5), json!(true), Value::Null] {
        let config = json!({"path":"a","op":"eq","value":value});
        let doc = v2(json!([{"id":"x","type":"condition","config":config}]));
        assert_eq!(config_of(&ok(&doc), 0), &config);
    }
}

#[test]
fn example_condition_with_only_a_true_edge() {
    let doc = v3(
        json!({"c": {"id":"c","type":"condition","config":{"path":"flag","op":"exists"}}, "t": http("t")}),
        json!([{"id":"e1","from":"c","to":"t","kind":"cond_true"}]),
    );
    let (code, node_id, edge_id) = graph_error(&doc);
    assert_eq!(code, "CONDITION_EDGE_CONSTRAINTS");
    assert_eq!(node_id.as_deref(), Some("c"));
    assert_eq!(edge_id, None);
}

#[test]
fn example_two_node_cycle() {
    let doc = v3(
        json!({"a": http("a"), "b": http("b")}),
        json!([{"id":"e1","from":"a","to":"b"},{"id":"e2","from":"b","to":"a"}]),
    );
    assert_eq!(
        graph_error(&doc),
        ("GRAPH_CYCLE_DETECTED".into(), None, None)
    );
}

fn fan_out_to_join(a: Value) -> Value {
    v3(
        json!({"root": http("root"), "a": a, "b": http("b"), "join": {"id":"join","type":"parallel.join"}}),
        json!([
            {"id":"e1","from":"root","to":"a"},{"id":"e2","from":"root","to":"b"},
            {"id":"e3","from":"a","to":"join"},{"id":"e4","from":"b","to":"join"}
        ]),
    )
}

#[test]
fn example_remote_node_in_parallel_region() {
    let a = json!({"id":"a","type":"agent.execute","config":{"execution":{"mode":"executor"}}});
    let (code, node_id, _) = graph_error(&fan_out_to_join(a));
    assert_eq!(code, "PARALLEL_REMOTE_NOT_SUPPORTED");
    assert_eq!(node_id.as_deref(), Some("a"));
}

#[test]
fn example_empty_graph() {
    let doc = v3(json!({}), json!([]));
    assert_eq!(graph_error(&doc), ("GRAPH_NODE_MISSING".into(), None, None));
}

// ---- spec 8: packages/workflow/src/index.test.ts ------------------------------------------------

#[test]
fn original_minimal_v2_agent_execute_without_config() {
    let parsed = ok(&v2(json!([{"id":"n1","type":"agent.execute"}])));
    assert_eq!(parsed.normalized["version"], "v2");
    let Plan::Sequence(nodes) = &parsed.plan else {
        panic!("v2 gives a sequence")
    };
    assert_eq!(nodes[0].spec, NodeSpec::AgentExecute(None));
    // The worker's reading: no `execution` runs as the cloud stub.
    assert!(!nodes[0].is_remote());
}

#[test]
fn original_full_agent_run_with_team() {
    let config = json!({
        "toolsetId": NIL,
        "llm": {"provider": "openai", "model": "gpt-4.1-mini", "auth": {"fallbackToEnv": true}},
        "execution": {"mode": "gateway"},
        "prompt": {"instructions": "Say hello."},
        "tools": {"allow": [], "execution": "cloud",
                  "authDefaults": {"connectors": {"github": {"secretId": NIL}}}},
        "limits": compact_limits(),
        "output": {"mode": "text"},
        "team": {
            "mode": "supervisor", "maxParallel": 3, "leadMode": "normal",
            "teammates": [{
                "id": "ux",
                "prompt": {"instructions": "Review UX."},
                "tools": {"allow": [], "execution": "cloud"},
                "limits": {"maxTurns": 2, "maxToolCalls": 0, "timeoutMs": 1000, "maxOutputChars": 1000,
                           "maxRuntimeChars": 2048},
                "output": {"mode": "json", "jsonSchema": {"type": "object"}}
            }]
        }
    });
    let parsed = ok(&v2(json!([{"id":"n1","type":"agent.run","config":config}])));
    assert_eq!(parsed.normalized["nodes"][0]["type"], "agent.run");
    assert_eq!(config_of(&parsed, 0), &config);
}

#[test]
fn original_anthropic_with_selector_tag_keeps_selector_without_pool() {
    let llm = json!({"provider":"anthropic","model":"claude-3-5-sonnet-latest","auth":{"fallbackToEnv":true}});
    let doc = agent_run_with(
        llm,
        json!({"execution": {"mode": "gateway", "selector": {"tag": "west"}}}),
    );
    let parsed = ok(&doc);
    assert_eq!(
        config_of(&parsed, 0)["execution"],
        json!({"mode":"gateway","selector":{"tag":"west"}})
    );
    assert_eq!(config_of(&parsed, 0)["llm"]["provider"], "anthropic");
}

#[test]
fn original_codex_engine() {
    let llm = json!({"provider":"openai","model":"gpt-4.1-mini","auth":{"fallbackToEnv":true}});
    let doc = agent_run_with(
        llm,
        json!({"execution": {"mode": "gateway"}, "engine": {"id": "gateway.codex.v2"}}),
    );
    assert_eq!(
        config_of(&ok(&doc), 0)["engine"],
        json!({"id":"gateway.codex.v2"})
    );
}

#[test]
fn engine_id_defaults_and_is_checked() {
    let doc = agent_run_with(json!({}), json!({"engine": {}}));
    assert_eq!(
        config_of(&ok(&doc), 0)["engine"],
        json!({"id":"gateway.loop.v2"})
    );
    let doc = agent_run_with(json!({}), json!({"engine": {"id": "codex.sdk.v1"}}));
    rejected_at(&doc, "nodes[0].config.engine.id");
}

#[test]
fn original_empty_tools_allow() {
    let doc = agent_run_with(json!({}), json!({"tools": {"allow": []}}));
    assert_eq!(
        config_of(&ok(&doc), 0)["tools"],
        json!({"allow":[],"execution":"cloud"})
    );
}

#[test]
fn original_vertex_requires_secret() {
    let without =
        json!({"provider":"vertex","model":"gemini-2.0-flash-001","auth":{"fallbackToEnv":true}});
    rejected_at(
        &agent_run_with(without, json!({})),
        "nodes[0].config.llm.auth.secretId",
    );
    let with = json!({"provider":"vertex","model":"gemini-2.0-flash-001","auth":{"secretId":NIL,"fallbackToEnv":true}});
    let parsed = ok(&agent_run_with(with.clone(), json!({})));
    assert_eq!(config_of(&parsed, 0)["llm"], with);
}

#[test]
fn original_minimal_v3_keeps_keys_and_both_versions_parse() {
    let doc = v3(
        json!({"root": http("root"), "next": http("next")}),
        json!([{"id":"e1","from":"root","to":"next","kind":"always"}]),
    );
    let parsed = ok(&doc);
    assert_eq!(parsed.normalized, doc);
    let Plan::Graph(graph) = &parsed.plan else {
        panic!("v3 gives a graph")
    };
    let keys: Vec<_> = graph.nodes.keys().map(String::as_str).collect();
    assert_eq!(keys, ["next", "root"]);
    assert!(matches!(
        ok(&v2(json!([http("a")]))).plan,
        Plan::Sequence(_)
    ));
}

// ---- our rules: ids --------------------------------------------------------------------------------

#[test]
fn duplicate_v2_node_ids_are_rejected() {
    let doc = v2(json!([http("a"), http("b"), http("a")]));
    let messages = rejected_at(&doc, "nodes[2].id");
    assert!(messages[0].contains("nodes[0]"), "{messages:?}");
}

#[test]
fn v3_key_must_equal_node_id() {
    let doc = v3(json!({"a": http("b")}), json!([]));
    let messages = rejected_at(&doc, "graph.nodes.a.id");
    assert_eq!(messages.len(), 1);
    let doc = v3(json!({"is-vip": http("vip")}), json!([]));
    rejected_at(&doc, "graph.nodes[\"is-vip\"].id");
}

#[test]
fn node_ids_and_keys_are_bounded() {
    rejected_at(&v2(json!([http("")])), "nodes[0].id");
    rejected_at(&v2(json!([{"type": "http.request"}])), "nodes[0].id");
    let long = "k".repeat(121);
    rejected_at(
        &v3(json!({long.clone(): http(&long)}), json!([])),
        &format!("graph.nodes.{long}"),
    );
    let ok_key = "k".repeat(120);
    ok(&v3(json!({ok_key.clone(): http(&ok_key)}), json!([])));
}

// ---- our rules: node configs ------------------------------------------------------------------------

#[test]
fn http_methods_are_upper_case_only() {
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
        let doc = v2(
            json!([{"id":"x","type":"http.request","config":{"method":method,"url":"https://example.test"}}]),
        );
        ok(&doc);
        let lower = method.to_lowercase();
        let doc = v2(json!([{"id":"x","type":"http.request","config":{"method":lower,"url":"/"}}]));
        rejected_at(&doc, "nodes[0].config.method");
    }
    let doc = v2(json!([{"id":"x","type":"http.request","config":{"method":"TRACE","url":"/"}}]));
    rejected_at(&doc, "nodes[0].config.method");
}

#[test]
fn http_config_is_normalised_and_bounded() {
    let config =
        json!({"method":"POST","url":"u".repeat(2000),"headers":{"x-a":"1"},"body":null,"bogus":1});
    let doc = v2(json!([{"id":"x","type":"http.request","config":config}]));
    let stored = config_of(&ok(&doc), 0).clone();
    assert_eq!(
        stored,
        json!({"method":"POST","url":"u".repeat(2000),"headers":{"x-a":"1"},"body":null})
    );
    let doc = v2(
        json!([{"id":"x","type":"http.request","config":{"method":"GET","url":"u".repeat(2001)}}]),
    );
    rejected_at(&doc, "nodes[0].config.url");
    let doc = v2(
        json!([{"id":"x","type":"http.request","config":{"method":"GET","url":"/","headers":{"":"v"}}}]),
    );
    rejected_at(&doc, "nodes[0].config.headers[\"\"]");
    let doc = v2(
        json!([{"id":"x","type":"http.request","config":{"method":"GET","url":"/","headers":{"a":1}}}]),
    );
    rejected_at(&doc, "nodes[0].config.headers.a");
    let doc = v2(json!([{"id":"x","type":"http.request","config":{"url":"/"}}]));
    rejected_at(&doc, "nodes[0].config.method");
}

#[test]
fn unknown_keys_are_dropped_everywhere() {
    let doc = json!({
        "version": "v2", "extra": true,
        "trigger": {"type": "trigger.manual", "config": {"ignored": 1}},
        "nodes": [
            {"id": "n", "type": "agent.execute", "note": "x",
             "config": {"execution": {"mode": "cloud", "selector": {"tag": "a", "zone": "b"}, "x": 1},
                        "task": {"type": "shell", "script": "ls", "cwd": "/"},
                        "sandbox": {"docker": {"image": "alpine", "pull": true}, "cpu": 2}, "other": 1}}
        ]
    });
    let expected = json!({
        "version": "v2",
        "trigger": {"type": "trigger.manual"},
        "nodes": [
            {"id": "n", "type": "agent.execute",
             "config": {"execution": {"mode": "cloud", "selector": {"tag": "a"}},
                        "task": {"type": "shell", "script": "ls"},
                        "sandbox": {"docker": {"image": "alpine"}}}}
        ]
    });
    assert_eq!(ok(&doc).normalized, expected);
}

#[test]
fn execution_modes_default_only_when_execution_is_given() {
    let with_secret = |execution: Option<Value>| {
        let mut config =
            json!({"connectorId":"github","actionId":"issue.create","auth":{"secretId":SECRET}});
        if let Some(execution) = execution {
            config["execution"] = execution;
        }
        v2(json!([{"id":"c","type":"connector.action","config":config}]))
    };
    let parsed = ok(&with_secret(None));
    assert_eq!(config_of(&parsed, 0).get("execution"), None);
    let parsed = ok(&with_secret(Some(json!({}))));
    assert_eq!(config_of(&parsed, 0)["execution"], json!({"mode":"cloud"}));
    let parsed = ok(&with_secret(Some(json!({"selector":{}}))));
    assert_eq!(
        config_of(&parsed, 0)["execution"],
        json!({"mode":"cloud","selector":{}})
    );
    rejected_at(
        &with_secret(Some(json!({"mode":"node"}))),
        "nodes[0].config.execution.mode",
    );

    let parsed = ok(&v2(
        json!([{"id":"e","type":"agent.execute","config":{"execution":{"selector":{"group":"g"}}}}]),
    ));
    assert_eq!(
        config_of(&parsed, 0)["execution"],
        json!({"mode":"executor","selector":{"group":"g"}})
    );
}

#[test]
fn selector_pool_is_managed_or_byon_and_never_defaulted() {
    let doc_with = |selector: Value| {
        v2(
            json!([{"id":"e","type":"agent.execute","config":{"execution":{"mode":"executor","selector":selector}}}]),
        )
    };
    for pool in ["managed", "byon"] {
        let parsed = ok(&doc_with(json!({"pool": pool})));
        assert_eq!(
            config_of(&parsed, 0)["execution"]["selector"],
            json!({"pool": pool})
        );
    }
    for pool in [json!("shared"), json!("MANAGED"), Value::Null, json!(1)] {
        rejected_at(
            &doc_with(json!({"pool": pool})),
            "nodes[0].config.execution.selector.pool",
        );
    }
    let full = json!({"labels":["gpu","eu"],"group":"g","tag":"t","executorId":SECRET});
    assert_eq!(
        config_of(&ok(&doc_with(full.clone())), 0)["execution"]["selector"],
        full
    );
    rejected_at(
        &doc_with(json!({"labels":[""]})),
        "nodes[0].config.execution.selector.labels[0]",
    );
    rejected_at(
        &doc_with(json!({"labels":vec!["l"; 51]})),
        "nodes[0].config.execution.selector.labels",
    );
    rejected_at(
        &doc_with(json!({"tag":"t".repeat(65)})),
        "nodes[0].config.execution.selector.tag",
    );
    rejected_at(
        &doc_with(json!({"group":""})),
        "nodes[0].config.execution.selector.group",
    );
}

#[test]
fn uuid_fields_use_the_strict_rule() {
    let doc_with = |id: &str| {
        v2(
            json!([{"id":"e","type":"agent.execute","config":{"execution":{"selector":{"executorId":id}}}}]),
        )
    };
    for good in [
        SECRET,
        NIL,
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "6F1C2A9E-3B7D-8C11-BA2E-5D8F0B4C7E21",
    ] {
        ok(&doc_with(good));
    }
    for bad in [
        "1234",
        "11111111-1111-0111-0111-111111111111",
        "11111111-1111-1111-7111-111111111111",
        "11111111-1111-9111-8111-111111111111",
        "6f1c2a9e3b7d4c119a2e5d8f0b4c7e21",
    ] {
        rejected_at(
            &doc_with(bad),
            "nodes[0].config.execution.selector.executorId",
        );
    }
    let github = |secret: &str| {
        v2(json!([{"id":"g","type":"connector.github.issue.create",
                   "config":{"repo":"octo/test","title":"t","auth":{"secretId":secret}}}]))
    };
    ok(&github(SECRET));
    rejected_at(&github("1234"), "nodes[0].config.auth.secretId");
}

#[test]
fn agent_execute_task_and_sandbox_rules() {
    let doc_with = |config: Value| v2(json!([{"id":"e","type":"agent.execute","config":config}]));
    let full = json!({
        "task": {"type":"shell","script":"echo hi","shell":"bash","env":{"A":"1"}},
        "sandbox": {"backend":"host","network":"enabled","timeoutMs":600000,"docker":{"image":"alpine"},
                    "envPassthroughAllowlist":["PATH"]}
    });
    assert_eq!(config_of(&ok(&doc_with(full.clone())), 0), &full);
    let p = "nodes[0].config";
    rejected_at(
        &doc_with(json!({"task":{"script":"x"}})),
        &format!("{p}.task.type"),
    );
    rejected_at(
        &doc_with(json!({"task":{"type":"python","script":"x"}})),
        &format!("{p}.task.type"),
    );
    rejected_at(
        &doc_with(json!({"task":{"type":"shell","script":""}})),
        &format!("{p}.task.script"),
    );
    rejected_at(
        &doc_with(json!({"task":{"type":"shell","script":"x","shell":"zsh"}})),
        &format!("{p}.task.shell"),
    );
    rejected_at(
        &doc_with(json!({"task":{"type":"shell","script":"x","shell":null}})),
        &format!("{p}.task.shell"),
    );
    rejected_at(
        &doc_with(json!({"sandbox":{"timeoutMs":999}})),
        &format!("{p}.sandbox.timeoutMs"),
    );
    rejected_at(
        &doc_with(json!({"sandbox":{"timeoutMs":600001}})),
        &format!("{p}.sandbox.timeoutMs"),
    );
    rejected_at(
        &doc_with(json!({"sandbox":{"timeoutMs":1500.5}})),
        &format!("{p}.sandbox.timeoutMs"),
    );
    rejected_at(
        &doc_with(json!({"sandbox":{"backend":"vm"}})),
        &format!("{p}.sandbox.backend"),
    );
    rejected_at(
        &doc_with(json!({"sandbox":{"docker":{"image":""}}})),
        &format!("{p}.sandbox.docker.image"),
    );
    let many = vec!["V"; 51];
    rejected_at(
        &doc_with(json!({"sandbox":{"envPassthroughAllowlist":many}})),
        &format!("{p}.sandbox.envPassthroughAllowlist"),
    );
    let parsed = ok(&doc_with(json!({"sandbox":{"timeoutMs":1000.0}})));
    assert_eq!(config_of(&parsed, 0)["sandbox"]["timeoutMs"], json!(1000));
}

#[test]
fn legacy_github_issue_create_rules() {
    let doc_with = |config: Value| {
        v2(json!([{"id":"g","type":"connector.github.issue.create","config":config}]))
    };
    let good = json!({"repo":"octo/test","title":"Bug","body":"","auth":{"secretId":SECRET}});
    assert_eq!(config_of(&ok(&doc_with(good)), 0)["body"], "");
    for repo in ["octo", "octo/test/x", "/test", "octo/"] {
        let config = json!({"repo":repo,"title":"Bug","auth":{"secretId":SECRET}});
        rejected_at(&doc_with(config), "nodes[0].config.repo");
    }
    let config = json!({"repo":"o/r","title":"t".repeat(257),"auth":{"secretId":SECRET}});
    rejected_at(&doc_with(config), "nodes[0].config.title");
    rejected_at(
        &v2(json!([{"id":"g","type":"connector.github.issue.create"}])),
        "nodes[0].config",
    );
}

#[test]
fn condition_config_rules() {
    let doc_with = |config: Value| v2(json!([{"id":"c","type":"condition","config":config}]));
    ok(&v2(json!([{"id":"c","type":"condition"}])));
    ok(&doc_with(json!({"path":"$.a.b","op":"exists"})));
    rejected_at(
        &doc_with(json!({"path":"a","op":"like"})),
        "nodes[0].config.op",
    );
    rejected_at(
        &doc_with(json!({"path":"","op":"eq"})),
        "nodes[0].config.path",
    );
    rejected_at(
        &doc_with(json!({"path":"p".repeat(501),"op":"eq"})),
        "nodes[0].config.path",
    );
}

#[test]
fn parallel_join_config_is_defaulted() {
    let parsed = ok(&v2(json!([{"id":"j","type":"parallel.join"}])));
    assert_eq!(
        config_of(&parsed, 0),
        &json!({"mode":"all","failFast":true})
    );
    let Plan::Sequence(nodes) = &parsed.plan else {
        panic!("v2 gives a sequence")
    };
    assert_eq!(
        nodes[0].spec,
        NodeSpec::ParallelJoin(spec::Join {
            mode: "all".into(),
            fail_fast: true
        })
    );
    let parsed = ok(&v2(
        json!([{"id":"j","type":"parallel.join","config":{"failFast":false}}]),
    ));
    assert_eq!(
        config_of(&parsed, 0),
        &json!({"mode":"all","failFast":false})
    );
    let doc = v2(json!([{"id":"j","type":"parallel.join","config":{"mode":"any"}}]));
    rejected_at(&doc, "nodes[0].config.mode");
}

#[test]
fn agent_run_partial_limits_are_filled() {
    let doc = agent_run_with(json!({}), json!({"limits": {"maxTurns": 3}}));
    let parsed = ok(&doc);
    let limits = &config_of(&parsed, 0)["limits"];
    let expected = json!({"maxTurns":3,"maxToolCalls":20,"timeoutMs":60000,"maxOutputChars":50000,"maxRuntimeChars":200000});
    assert_eq!(limits, &expected);
}

#[test]
fn agent_run_rejections() {
    let p = "nodes[0].config";
    let with = |extra: Value| agent_run_with(json!({}), extra);
    rejected_at(
        &agent_run_with(json!({"auth":{"fallbackToEnv":false}}), json!({})),
        &format!("{p}.llm.auth.fallbackToEnv"),
    );
    rejected_at(
        &agent_run_with(json!({"provider":"mistral"}), json!({})),
        &format!("{p}.llm.provider"),
    );
    rejected_at(
        &agent_run_with(json!({"model":""}), json!({})),
        &format!("{p}.llm.model"),
    );
    rejected_at(
        &with(json!({"tools": {"execution": "cloud"}})),
        &format!("{p}.tools.allow"),
    );
    rejected_at(
        &with(json!({"tools": {"allow": ["x".repeat(121)]}})),
        &format!("{p}.tools.allow[0]"),
    );
    rejected_at(
        &with(json!({"limits": {"maxTurns": 65}})),
        &format!("{p}.limits.maxTurns"),
    );
    rejected_at(
        &with(json!({"limits": {"maxToolCalls": -1}})),
        &format!("{p}.limits.maxToolCalls"),
    );
    rejected_at(
        &with(json!({"limits": {"maxOutputChars": 255}})),
        &format!("{p}.limits.maxOutputChars"),
    );
    rejected_at(
        &with(json!({"limits": {"maxRuntimeChars": 2_000_001}})),
        &format!("{p}.limits.maxRuntimeChars"),
    );
    rejected_at(
        &with(json!({"output": {"mode": "yaml"}})),
        &format!("{p}.output.mode"),
    );
    rejected_at(
        &with(json!({"toolsetId": "1234"})),
        &format!("{p}.toolsetId"),
    );
    let bad_default = json!({"tools": {"allow": [], "authDefaults": {"connectors": {"github": {"secretId": "x"}}}}});
    rejected_at(
        &with(bad_default),
        &format!("{p}.tools.authDefaults.connectors.github.secretId"),
    );
    let long_connector = json!({"tools": {"allow": [], "authDefaults": {"connectors": {"c".repeat(81): {"secretId": SECRET}}}}});
    rejected_at(
        &with(long_connector),
        &format!("{p}.tools.authDefaults.connectors.{}", "c".repeat(81)),
    );
    rejected_at(&v2(json!([{"id":"x","type":"agent.run"}])), p);
    rejected_at(
        &v2(json!([{"id":"x","type":"agent.run","config":{"prompt":{"instructions":"x"}}}])),
        &format!("{p}.llm"),
    );
    rejected_at(
        &v2(json!([{"id":"x","type":"agent.run","config":{"llm":{}}}])),
        &format!("{p}.prompt"),
    );
    rejected_at(
        &v2(json!([{"id":"x","type":"agent.run","config":{"llm":{},"prompt":{}}}])),
        &format!("{p}.prompt.instructions"),
    );
}

fn teammate() -> Value {
    json!({"id":"ux","prompt":{"instructions":"Review"},"tools":{"allow":["web.search"]},"limits":{},"output":{}})
}

#[test]
fn team_defaults_and_rules() {
    let doc = agent_run_with(
        json!({}),
        json!({"team": {"mode": "supervisor", "teammates": [teammate()]}}),
    );
    let parsed = ok(&doc);
    let team = &config_of(&parsed, 0)["team"];
    let expected = json!({
        "mode": "supervisor", "maxParallel": 3, "leadMode": "normal",
        "teammates": [{
            "id": "ux", "prompt": {"instructions": "Review"},
            "tools": {"allow": ["web.search"], "execution": "cloud"},
            "limits": {"maxTurns": 8, "maxToolCalls": 20, "timeoutMs": 60000, "maxOutputChars": 50000,
                       "maxRuntimeChars": 200000},
            "output": {"mode": "text"}
        }]
    });
    assert_eq!(team, &expected);

    let p = "nodes[0].config.team";
    let with_team = |team: Value| agent_run_with(json!({}), json!({"team": team}));
    rejected_at(
        &with_team(json!({"teammates": [teammate()]})),
        &format!("{p}.mode"),
    );
    rejected_at(
        &with_team(json!({"mode": "supervisor", "teammates": []})),
        &format!("{p}.teammates"),
    );
    let many = vec![teammate(); 33];
    rejected_at(
        &with_team(json!({"mode": "supervisor", "teammates": many})),
        &format!("{p}.teammates"),
    );
    rejected_at(
        &with_team(json!({"mode": "supervisor", "maxParallel": 17, "teammates": [teammate()]})),
        &format!("{p}.maxParallel"),
    );
    rejected_at(
        &with_team(json!({"mode": "supervisor", "leadMode": "solo", "teammates": [teammate()]})),
        &format!("{p}.leadMode"),
    );
    for missing in ["tools", "limits", "output", "prompt", "id"] {
        let mut mate = teammate();
        if let Value::Object(map) = &mut mate {
            map.remove(missing);
        }
        let doc = with_team(json!({"mode": "supervisor", "teammates": [mate]}));
        rejected_at(&doc, &format!("{p}.teammates[0].{missing}"));
    }
    let mut mate = teammate();
    mate["tools"]["execution"] = json!("executor");
    rejected_at(
        &with_team(json!({"mode": "supervisor", "teammates": [mate]})),
        &format!("{p}.teammates[0].tools.execution"),
    );
    let mut mate = teammate();
    mate["llm"] = json!({});
    rejected_at(
        &with_team(json!({"mode": "supervisor", "teammates": [mate]})),
        &format!("{p}.teammates[0].llm.model"),
    );
}

// ---- document level ----------------------------------------------------------------------------------

#[test]
fn version_errors_are_reported_at_the_root() {
    for version in [json!("v1"), json!("V2"), Value::Null, json!(2)] {
        let mut doc = v2(json!([http("a")]));
        doc["version"] = version;
        rejected_at(&doc, "(root)");
    }
    rejected_at(
        &json!({"trigger": {"type": "trigger.manual"}, "nodes": []}),
        "(root)",
    );
    rejected_at(&json!([]), "(root)");
}

#[test]
fn document_shape_errors() {
    rejected_at(&json!({"version":"v2","nodes":[http("a")]}), "trigger");
    rejected_at(
        &json!({"version":"v2","trigger":{"type":"trigger.hourly"},"nodes":[http("a")]}),
        "trigger.type",
    );
    rejected_at(
        &json!({"version":"v2","trigger":{"type":"trigger.manual"}}),
        "nodes",
    );
    rejected_at(
        &json!({"version":"v2","trigger":{"type":"trigger.cron","config":{"cron":""}},"nodes":[http("a")]}),
        "trigger.config.cron",
    );
    rejected_at(&v2(json!([{"id":"a","type":"http.get"}])), "nodes[0].type");
    rejected_at(&v2(json!([{"id":"a"}])), "nodes[0].type");
    rejected_at(&v2(json!(["a"])), "nodes[0]");
    rejected_at(
        &json!({"version":"v3","trigger":{"type":"trigger.manual"}}),
        "graph",
    );
    rejected_at(
        &json!({"version":"v3","trigger":{"type":"trigger.manual"},"graph":{"nodes":{"a":http("a")}}}),
        "graph.edges",
    );
    rejected_at(
        &json!({"version":"v3","trigger":{"type":"trigger.manual"},"graph":{"edges":[]}}),
        "graph.nodes",
    );
    rejected_at(
        &json!({"version":"v3","trigger":{"type":"trigger.manual"},"graph":{"nodes":[],"edges":[]}}),
        "graph.nodes",
    );
    // A v2 document's nodes are not read by v3, and the other way round.
    rejected_at(
        &json!({"version":"v3","trigger":{"type":"trigger.manual"},"nodes":[http("a")]}),
        "graph",
    );
}

#[test]
fn edge_rules() {
    let nodes = json!({"a": http("a"), "b": http("b")});
    let edge_doc = |edge: Value| v3(nodes.clone(), json!([edge]));
    rejected_at(
        &edge_doc(json!({"id":"e","from":"a","to":"b","kind":"maybe"})),
        "graph.edges[0].kind",
    );
    rejected_at(
        &edge_doc(json!({"id":"","from":"a","to":"b"})),
        "graph.edges[0].id",
    );
    rejected_at(&edge_doc(json!({"id":"e","to":"b"})), "graph.edges[0].from");
    rejected_at(
        &edge_doc(json!({"id":"e","from":"a","to":"b".repeat(121)})),
        "graph.edges[0].to",
    );
    let parsed = ok(&edge_doc(
        json!({"id":"e","from":"a","to":"b","kind":"always","w":1}),
    ));
    assert_eq!(
        parsed.normalized["graph"]["edges"],
        json!([{"id":"e","from":"a","to":"b","kind":"always"}])
    );
}

#[test]
fn all_errors_are_collected() {
    let doc = json!({
        "version": "v2",
        "trigger": {"type": "trigger.webhook"},
        "nodes": [
            {"id": "a", "type": "http.request", "config": {"method": "get", "url": ""}},
            {"id": "b", "type": "condition", "config": {"path": "", "op": "is"}}
        ]
    });
    let messages = invalid(&doc);
    for path in [
        "trigger.config",
        "nodes[0].config.method",
        "nodes[0].config.url",
        "nodes[1].config.path",
        "nodes[1].config.op",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(&format!("{path}: "))),
            "{path} missing: {messages:?}"
        );
    }
    assert_eq!(messages.len(), 5);
    assert_eq!(DslError::Invalid(messages).code(), "INVALID_WORKFLOW_DSL");
}

#[test]
fn error_list_is_capped() {
    let nodes: Vec<Value> = (0..200)
        .map(|i| json!({"id": format!("n{i}"), "type": "nope"}))
        .collect();
    let messages = invalid(&v2(Value::Array(nodes)));
    assert_eq!(messages.len(), 51);
    assert_eq!(messages[50], "(root): 150 more errors not shown");
}

// ---- graph constraints ---------------------------------------------------------------------------------

#[test]
fn graph_edge_errors_name_the_edge() {
    let nodes = json!({"a": http("a"), "b": http("b")});
    let doc = v3(
        nodes.clone(),
        json!([{"id":"e","from":"a","to":"b"},{"id":"e","from":"b","to":"a"}]),
    );
    let (code, _, edge_id) = graph_error(&doc);
    assert_eq!(
        (code.as_str(), edge_id.as_deref()),
        ("GRAPH_EDGE_INVALID", Some("e"))
    );
    let doc = v3(
        nodes,
        json!([{"id":"ok","from":"a","to":"b"},{"id":"dangling","from":"a","to":"zzz"}]),
    );
    let (code, node_id, edge_id) = graph_error(&doc);
    assert_eq!(
        (code.as_str(), node_id, edge_id.as_deref()),
        ("GRAPH_EDGE_INVALID", None, Some("dangling"))
    );
}

#[test]
fn graph_constraints_are_checked_in_order() {
    let condition = json!({"id":"c","type":"condition","config":{"path":"x","op":"exists"}});
    // A cycle and a bad condition: the condition rule comes first.
    let doc = v3(
        json!({"a": http("a"), "c": condition}),
        json!([{"id":"e1","from":"a","to":"c"},{"id":"e2","from":"c","to":"a"}]),
    );
    assert_eq!(graph_error(&doc).0, "CONDITION_EDGE_CONSTRAINTS");
    // A dangling edge beats both.
    let doc = v3(
        json!({"a": http("a"), "c": {"id":"c","type":"condition"}}),
        json!([{"id":"e1","from":"a","to":"c"},{"id":"e2","from":"c","to":"a"},{"id":"e3","from":"c","to":"q"}]),
    );
    assert_eq!(graph_error(&doc).0, "GRAPH_EDGE_INVALID");
    // Schema errors come before any graph rule.
    let doc = v3(
        json!({"a": http("b")}),
        json!([{"id":"e","from":"a","to":"a"}]),
    );
    rejected_at(&doc, "graph.nodes.a.id");
}

#[test]
fn self_loop_is_a_cycle() {
    let doc = v3(
        json!({"a": http("a")}),
        json!([{"id":"e","from":"a","to":"a"}]),
    );
    assert_eq!(graph_error(&doc).0, "GRAPH_CYCLE_DETECTED");
}

#[test]
fn condition_edge_shapes() {
    let nodes = json!({
        "c": {"id":"c","type":"condition","config":{"path":"x","op":"exists"}},
        "t": http("t"), "f": http("f")
    });
    let doc_with = |edges: Value| v3(nodes.clone(), edges);
    let t = json!({"id":"e1","from":"c","to":"t","kind":"cond_true"});
    let f = json!({"id":"e2","from":"c","to":"f","kind":"cond_false"});
    ok(&doc_with(json!([t.clone(), f.clone()])));
    let always = json!({"id":"e3","from":"c","to":"f"});
    assert_eq!(
        graph_error(&doc_with(json!([t.clone(), always]))).0,
        "CONDITION_EDGE_CONSTRAINTS"
    );
    let extra = json!({"id":"e4","from":"c","to":"t","kind":"cond_true"});
    assert_eq!(
        graph_error(&doc_with(json!([t.clone(), f, extra]))).0,
        "CONDITION_EDGE_CONSTRAINTS"
    );
    assert_eq!(graph_error(&doc_with(json!([]))).1.as_deref(), Some("c"));
    // cond_* edges leaving a non-condition node pass.
    let from_http = json!({"id":"e5","from":"t","to":"f","kind":"cond_false"});
    ok(&doc_with(json!([
        t,
        json!({"id":"e2","from":"c","to":"f","kind":"cond_false"}),
        from_http
    ])));
}

#[test]
fn parallel_region_remote_rules() {
    let remote = [
        json!({"id":"a","type":"agent.run","config":{"llm":{},"prompt":{"instructions":"x"}}}),
        json!({"id":"a","type":"agent.execute"}),
        json!({"id":"a","type":"agent.execute","config":{}}),
        json!({"id":"a","type":"agent.execute","config":{"execution":{}}}),
        json!({"id":"a","type":"connector.action","config":{"connectorId":"c","actionId":"a",
               "auth":{"secretId":SECRET},"execution":{"mode":"executor"}}}),
    ];
    for a in remote {
        let (code, node_id, _) = graph_error(&fan_out_to_join(a.clone()));
        assert_eq!(
            (code.as_str(), node_id.as_deref()),
            ("PARALLEL_REMOTE_NOT_SUPPORTED", Some("a")),
            "{a}"
        );
    }
    let local = [
        http("a"),
        json!({"id":"a","type":"agent.execute","config":{"execution":{"mode":"cloud"}}}),
        json!({"id":"a","type":"connector.action","config":{"connectorId":"c","actionId":"a","auth":{"secretId":SECRET}}}),
    ];
    for a in local {
        ok(&fan_out_to_join(a));
    }
}

#[test]
fn remote_nodes_outside_parallel_regions_pass() {
    let remote =
        json!({"id":"a","type":"agent.execute","config":{"execution":{"mode":"executor"}}});
    // Fan-out with no join.
    let doc = v3(
        json!({"root": http("root"), "a": remote.clone(), "b": http("b")}),
        json!([{"id":"e1","from":"root","to":"a"},{"id":"e2","from":"root","to":"b"}]),
    );
    ok(&doc);
    // Condition branches meeting at a join are not a parallel region.
    let doc = v3(
        json!({"c": {"id":"c","type":"condition","config":{"path":"x","op":"exists"}},
               "a": remote.clone(), "b": http("b"), "join": {"id":"join","type":"parallel.join"}}),
        json!([{"id":"e1","from":"c","to":"a","kind":"cond_true"},{"id":"e2","from":"c","to":"b","kind":"cond_false"},
               {"id":"e3","from":"a","to":"join"},{"id":"e4","from":"b","to":"join"}]),
    );
    ok(&doc);
    // After the join, and before the fan-out, a remote node is fine.
    let doc = v3(
        json!({"pre": {"id": "pre", "type": "agent.execute", "config": {"execution": {"mode": "executor"}}}, "root": http("root"), "x": http("x"), "y": http("y"),
               "join": {"id":"join","type":"parallel.join"}, "post": {"id":"post","type":"agent.execute"}}),
        json!([{"id":"e0","from":"pre","to":"root"},{"id":"e1","from":"root","to":"x"},{"id":"e2","from":"root","to":"y"},
               {"id":"e3","from":"x","to":"join"},{"id":"e4","from":"y","to":"join"},{"id":"e5","from":"join","to":"post"}]),
    );
    ok(&doc);
    // A remote node deep inside a branch is found.
    let doc = v3(
        json!({"root": http("root"), "x": http("x"), "deep": {"id":"deep","type":"agent.execute"}, "y": http("y"),
               "join": {"id":"join","type":"parallel.join"}}),
        json!([{"id":"e1","from":"root","to":"x"},{"id":"e2","from":"root","to":"y"},{"id":"e3","from":"x","to":"deep"},
               {"id":"e4","from":"deep","to":"join"},{"id":"e5","from":"y","to":"join"}]),
    );
    assert_eq!(graph_error(&doc).1.as_deref(), Some("deep"));
}

#[test]
fn graph_error_codes_are_exposed() {
    let err = DslError::Graph {
        code: "GRAPH_CYCLE_DETECTED",
        message: String::new(),
        node_id: None,
        edge_id: None,
    };
    assert_eq!(err.code(), "GRAPH_CYCLE_DETECTED");
}

/// Fuzzing the parser: arbitrary JSON, alone or in the places a document has, never panics and always
/// answers (a valid document or its errors).
mod fuzz {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::super::{parse, parse_node, parse_within, Limits};

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-z.$ ]{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("v2"),
                Just("v3"),
                Just("http.request"),
                Just("condition"),
                Just("parallel.join"),
                Just("agent.execute"),
                Just("agent.run"),
                Just("connector.action"),
                Just("executor"),
                Just("cond_true"),
                Just("GET"),
                Just("trigger.manual"),
                Just("eq"),
            ]
            .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("version".to_string()),
                        Just("trigger".to_string()),
                        Just("nodes".to_string()),
                        Just("graph".to_string()),
                        Just("edges".to_string()),
                        Just("id".to_string()),
                        Just("type".to_string()),
                        Just("config".to_string()),
                        Just("from".to_string()),
                        Just("to".to_string()),
                        Just("kind".to_string()),
                        Just("execution".to_string()),
                        Just("mode".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..6,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn any_json_is_answered(doc in json_value()) {
            let _ = parse(&doc);
            let _ = parse_node(&doc);
            let _ = parse_within(&doc, &Limits { max_nodes: 50, max_edges: 50, max_bytes: 10_000 });
        }

        #[test]
        fn any_nodes_in_a_document_are_answered(nodes in proptest::collection::vec(json_value(), 0..8), edges in proptest::collection::vec(json_value(), 0..8)) {
            let v2 = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": nodes});
            let _ = parse(&v2);
            let keyed: serde_json::Map<String, Value> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("n{i}"), n.clone()))
                .collect();
            let v3 = json!({"version": "v3", "trigger": {"type": "trigger.manual"}, "graph": {"nodes": keyed, "edges": edges}});
            let _ = parse(&v3);
        }
    }
}
