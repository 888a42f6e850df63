use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::domain::gateway::protocol::ResultStatus;
use crate::node_agent::testing::{context, shell_invoke, WaitingSandbox};

fn dispatcher(sandbox: &WaitingSandbox, max_in_flight: usize) -> Dispatcher {
    Dispatcher::new(Arc::new(context(sandbox.clone())), max_in_flight)
}

async fn results(work: &mut Dispatcher, n: usize) -> Vec<ToolResultV2> {
    let mut got = Vec::new();
    for _ in 0..n {
        let next = tokio::time::timeout(Duration::from_secs(10), work.next_result());
        got.push(next.await.expect("a result in time"));
    }
    got.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    got
}

#[tokio::test]
async fn at_most_max_in_flight_calls_run_at_once_and_the_rest_wait() {
    let sandbox = WaitingSandbox {
        delay: Duration::from_millis(150),
        ..WaitingSandbox::default()
    };
    let mut work = dispatcher(&sandbox, 2);
    for i in 0..5 {
        work.on_text(&shell_invoke(&format!("r{i}"), &format!("task {i}")));
    }
    assert_eq!(work.in_flight(), 5);
    let got = results(&mut work, 5).await;
    assert_eq!(sandbox.peak.load(Ordering::SeqCst), 2);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.request_id, format!("r{i}"));
        assert_eq!(r.status, ResultStatus::Succeeded);
        assert_eq!(r.output.as_ref().unwrap()["stdout"], format!("task {i}"));
    }
    assert!(work.is_idle());
}

#[tokio::test]
async fn an_invalid_invoke_that_names_its_request_is_answered() {
    let sandbox = WaitingSandbox::default();
    let mut work = dispatcher(&sandbox, 1);
    // The tool policy's timeout is out of bounds.
    let mut bad: Value = serde_json::from_str(&shell_invoke("r1", "x")).unwrap();
    bad["toolPolicy"]["timeoutMs"] = json!(5);
    work.on_text(&bad.to_string());
    let got = work.next_result().await;
    assert_eq!(
        (got.request_id.as_str(), got.status, got.error.as_deref()),
        ("r1", ResultStatus::Failed, Some("INVALID_INVOKE"))
    );
    for ignored in [
        "not json",
        r#"{"type":"invoke_tool_v2"}"#,
        r#"{"type":"invoke_tool_v2","requestId":""}"#,
        r#"{"type":"something_else","requestId":"r2"}"#,
    ] {
        work.on_text(ignored);
    }
    assert!(work.is_idle());
}

#[tokio::test]
async fn stopping_refuses_new_calls_and_those_still_waiting_but_finishes_running_ones() {
    let sandbox = WaitingSandbox {
        delay: Duration::from_millis(300),
        ..WaitingSandbox::default()
    };
    let mut work = dispatcher(&sandbox, 1);
    work.on_text(&shell_invoke("r1", "first"));
    work.on_text(&shell_invoke("r2", "second"));
    // r1 holds the only slot; r2 waits.
    tokio::time::sleep(Duration::from_millis(50)).await;
    work.stop_accepting();
    work.on_text(&shell_invoke("r3", "third"));
    let got = results(&mut work, 3).await;
    assert_eq!(got[0].status, ResultStatus::Succeeded);
    assert_eq!(got[1].error.as_deref(), Some("AGENT_SHUTTING_DOWN"));
    assert_eq!(got[2].error.as_deref(), Some("AGENT_SHUTTING_DOWN"));
    assert_eq!(sandbox.peak.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn finished_results_wait_in_order_and_a_failed_send_goes_first_again() {
    let sandbox = WaitingSandbox::default();
    let mut work = dispatcher(&sandbox, 4);
    work.on_text(&shell_invoke("r1", "a"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    work.collect_finished();
    assert_eq!(work.in_flight(), 0);
    let first = work.pop_unsent().unwrap();
    assert_eq!(first.request_id, "r1");
    work.requeue(first);
    assert!(!work.is_idle());
    assert_eq!(work.next_result().await.request_id, "r1");
    assert!(work.is_idle());
}

#[tokio::test]
async fn abandoning_ends_running_calls() {
    let sandbox = WaitingSandbox {
        delay: Duration::from_secs(30),
        ..WaitingSandbox::default()
    };
    let mut work = dispatcher(&sandbox, 1);
    work.on_text(&shell_invoke("r1", "a"));
    work.on_text(&shell_invoke("r2", "b"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let lost = tokio::time::timeout(Duration::from_secs(5), work.abandon())
        .await
        .unwrap();
    assert_eq!(lost, 2);
    assert!(work.is_idle());
}
