use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

use super::*;
use crate::node_agent::config::Capabilities;
use crate::node_agent::testing::{context, shell_invoke, WaitingSandbox};

#[test]
fn backoff_doubles_to_thirty_seconds_with_jitter() {
    let ms = |a| backoff(a).as_millis();
    assert!((1000..1250).contains(&ms(1)));
    assert!((2000..2250).contains(&ms(2)));
    assert!((30_000..30_250).contains(&ms(9)));
    assert!((30_000..30_250).contains(&ms(500)));
}

/// A gateway on a local port, and an agent connected to it running tasks in `sandbox`.
struct Harness {
    listener: TcpListener,
    stop: watch::Sender<bool>,
    agent: JoinHandle<Result<(), AgentError>>,
}

async fn start(delay: Duration, grace: Duration) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = AgentConfig {
        pool: Pool::Managed,
        executor_id: Uuid::new_v4(),
        executor_token: "token".into(),
        organization_id: None,
        gateway_ws_url: format!("ws://127.0.0.1:{port}/ws/executor"),
        api_base_url: "http://127.0.0.1:1".into(),
        executor_name: "box".into(),
        executor_version: "1.0.0".into(),
        capabilities: Capabilities {
            max_in_flight: Some(2),
            ..Capabilities::default()
        },
    };
    let sandbox = WaitingSandbox {
        delay,
        ..WaitingSandbox::default()
    };
    let (stop, shutdown) = watch::channel(false);
    let agent = tokio::spawn(async move { run(&config, context(sandbox), grace, shutdown).await });
    Harness {
        listener,
        stop,
        agent,
    }
}

impl Harness {
    async fn accept(&self) -> WebSocketStream<TcpStream> {
        let accepted = tokio::time::timeout(Duration::from_secs(10), self.listener.accept());
        let (socket, _) = accepted.await.unwrap().unwrap();
        tokio_tungstenite::accept_async(socket).await.unwrap()
    }

    async fn stopped(self) {
        let _ = self.stop.send(true);
        let ended = tokio::time::timeout(Duration::from_secs(5), self.agent).await;
        ended.unwrap().unwrap().unwrap();
    }
}

/// The next text frame, as JSON.
async fn frame(ws: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
        match next.expect("a frame in time") {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(text.as_str()).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The next frame that is not a hello.
async fn non_hello(ws: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        let f = frame(ws).await;
        if f["type"] != "executor_hello_v2" {
            return f;
        }
    }
}

#[tokio::test]
async fn invocations_are_run_and_answered_after_the_hello() {
    let gateway = start(Duration::from_millis(10), Duration::from_secs(5)).await;
    let mut ws = gateway.accept().await;
    let hello = frame(&mut ws).await;
    assert_eq!(hello["type"], "executor_hello_v2");
    assert_eq!(hello["maxInFlight"], 2);
    ws.send(Message::text(shell_invoke("r1", "echo hi")))
        .await
        .unwrap();
    let result = non_hello(&mut ws).await;
    assert_eq!(result["type"], "tool_result_v2");
    assert_eq!(result["requestId"], "r1");
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["output"]["stdout"], "echo hi");
    ws.send(Message::text(
        r#"{"type":"invoke_tool_v2","requestId":"r2"}"#,
    ))
    .await
    .unwrap();
    let result = non_hello(&mut ws).await;
    assert_eq!(
        (&result["requestId"], &result["status"], &result["error"]),
        (
            &Value::from("r2"),
            &Value::from("failed"),
            &Value::from("INVALID_INVOKE")
        )
    );
    gateway.stopped().await;
}

#[tokio::test]
async fn a_result_that_finishes_while_disconnected_is_sent_after_the_next_hello() {
    let gateway = start(Duration::from_millis(300), Duration::from_secs(5)).await;
    let mut first = gateway.accept().await;
    assert_eq!(frame(&mut first).await["type"], "executor_hello_v2");
    first
        .send(Message::text(shell_invoke("r1", "slow")))
        .await
        .unwrap();
    // The connection drops before the task ends; the agent reconnects after about a second.
    drop(first);
    let mut second = gateway.accept().await;
    assert_eq!(frame(&mut second).await["type"], "executor_hello_v2");
    let result = frame(&mut second).await;
    assert_eq!(result["type"], "tool_result_v2");
    assert_eq!(result["requestId"], "r1");
    assert_eq!(result["status"], "succeeded");
    gateway.stopped().await;
}

#[tokio::test]
async fn shutdown_lets_running_calls_finish_and_report_then_closes() {
    let gateway = start(Duration::from_millis(500), Duration::from_secs(5)).await;
    let mut ws = gateway.accept().await;
    assert_eq!(frame(&mut ws).await["type"], "executor_hello_v2");
    ws.send(Message::text(shell_invoke("r1", "slow")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    gateway.stop.send(true).unwrap();
    let result = non_hello(&mut ws).await;
    assert_eq!(result["requestId"], "r1");
    assert_eq!(result["status"], "succeeded");
    let next = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(matches!(
        next.unwrap(),
        Some(Ok(Message::Close(_))) | None | Some(Err(_))
    ));
    let ended = tokio::time::timeout(Duration::from_secs(5), gateway.agent).await;
    ended.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_on_calls_that_outlast_the_grace() {
    let gateway = start(Duration::from_secs(30), Duration::from_millis(200)).await;
    let mut ws = gateway.accept().await;
    assert_eq!(frame(&mut ws).await["type"], "executor_hello_v2");
    ws.send(Message::text(shell_invoke("r1", "forever")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    gateway.stopped().await;
    assert!(started.elapsed() < Duration::from_secs(3));
}
