//! The gateway's HTTP edge (its own listener): `/ws/executor` for node agents, authenticated by their
//! executor token before the upgrade (a refusal is a plain 401, so an agent can tell it from a network
//! failure); `/internal/v1/*` for workers elsewhere, behind the service token (compared in constant
//! time); and `/healthz`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use futures_util::StreamExt;
use serde_json::json;

use subtle::ConstantTimeEq;

use super::dispatch::DispatchRequest;
use super::{CloseWhy, Connection, Gateway, GatewayError, Outbound, Verdict};
use crate::domain::common::extract::bearer;
use crate::platform::http::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws/executor", web::get().to(executor_socket))
        .route("/healthz", web::get().to(healthz))
        .route("/internal/v1/dispatch", web::post().to(dispatch_sync))
        .route(
            "/internal/v1/dispatch-async",
            web::post().to(dispatch_async),
        )
        .route("/internal/v1/results/{request_id}", web::get().to(result));
}

/// The `x-gateway-token` header against the service token, in constant time.
fn check_service_token(gateway: &Gateway, req: &HttpRequest) -> Result<(), ApiError> {
    let given = req
        .headers()
        .get("x-gateway-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let expected = gateway.config().service_token.expose().as_bytes();
    let equal: bool = given.ct_eq(expected).into();
    if expected.is_empty() || !equal {
        return Err(ApiError::unauthorized("Invalid gateway service token"));
    }
    Ok(())
}

fn parse_dispatch(body: &[u8]) -> Result<DispatchRequest, ApiError> {
    serde_json::from_slice::<DispatchRequest>(body)
        .ok()
        .filter(DispatchRequest::is_valid)
        .ok_or_else(|| ApiError::bad_request("Invalid dispatch payload"))
}

async fn dispatch_async(
    gateway: web::Data<Gateway>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_service_token(&gateway, &req)?;
    let dispatch = parse_dispatch(&body)?;
    let accepted = gateway.into_inner().dispatch_async(dispatch).await?;
    Ok(if accepted.dispatched {
        HttpResponse::Created().json(accepted)
    } else {
        HttpResponse::Ok().json(accepted)
    })
}

async fn dispatch_sync(
    gateway: web::Data<Gateway>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_service_token(&gateway, &req)?;
    let dispatch = parse_dispatch(&body)?;
    let wait = Duration::from_millis(dispatch.timeout_ms().max(100)) + Duration::from_secs(16);
    match tokio::time::timeout(wait, gateway.into_inner().dispatch_sync(dispatch)).await {
        Ok(result) => Ok(HttpResponse::Ok().json(result?)),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "GATEWAY_TIMEOUT",
            "Gateway brain did not reply in time",
        )),
    }
}

async fn result(
    gateway: web::Data<Gateway>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    check_service_token(&gateway, &req)?;
    let request_id = path.into_inner();
    if request_id.chars().count() < 10 {
        return Err(ApiError::bad_request("Invalid requestId"));
    }
    match gateway.stored_result(&request_id).await? {
        Some(r) => Ok(HttpResponse::Ok().json(r)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "RESULT_NOT_READY",
            "Result not ready",
        )),
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::InvalidToken => ApiError::unauthorized("Invalid executor token"),
            GatewayError::Agents(e) => e.into(),
            GatewayError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "GATEWAY_UNAVAILABLE",
                "Gateway state temporarily unavailable",
            )
            .with_cause(e),
        }
    }
}

async fn healthz(gateway: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "ok": true, "edgeId": gateway.edge_id() }))
}

async fn executor_socket(
    gateway: web::Data<Gateway>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let token = bearer(&req).ok_or_else(|| ApiError::unauthorized("Invalid executor token"))?;
    let identity = gateway.authenticate(&token).await?;
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|_| ApiError::bad_request("Expected a WebSocket upgrade"))?;
    let stream = stream.max_frame_size(gateway.config().max_frame_bytes);
    // Registered inside the socket's own task: nothing is left registered if this handler is dropped.
    let gateway = gateway.into_inner();
    actix_web::rt::spawn(async move {
        let conn = gateway.connect(identity).await;
        serve_socket(gateway, conn, session, stream).await;
    });
    Ok(response)
}

/// Every this many pings the executor's revocation is read again, hello or not.
const RECHECK_EVERY_PINGS: u32 = 3;

/// One executor's socket until it closes: frames in, frames and closes out, a ping every interval and
/// a close when nothing (a pong or any frame) has come for two and a half intervals.
async fn serve_socket(
    gateway: Arc<Gateway>,
    mut conn: Connection,
    mut session: Session,
    mut stream: MessageStream,
) {
    let interval = Duration::from_millis(gateway.config().ping_interval_ms.max(100));
    let mut ticker = tokio::time::interval(interval);
    // A stall (a slow database answer inside the loop) must not be followed by a burst of ticks that
    // would judge every healthy socket dead at once.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_heard = Instant::now();
    let mut pings: u32 = 0;
    let why: Option<CloseWhy> = loop {
        tokio::select! {
            msg = stream.next() => {
                if matches!(msg, Some(Ok(_))) {
                    last_heard = Instant::now();
                }
                match msg {
                Some(Ok(Message::Text(text))) => {
                    if let Verdict::Close(why) = gateway.on_text(&conn, &text).await {
                        break Some(why);
                    }
                }
                Some(Ok(Message::Ping(bytes))) => {
                    if session.pong(&bytes).await.is_err() {
                        break None;
                    }
                }
                Some(Ok(Message::Pong(_))) => gateway.still_alive(&conn).await,
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::info!(executor_id = %conn.executor, error = %e, "executor socket error");
                    break None;
                }
            }},
            out = conn.outbound.recv() => match out {
                Some(Outbound::Frame(text)) => {
                    if session.text(text).await.is_err() {
                        break None;
                    }
                }
                Some(Outbound::Close(why)) => break Some(why),
                None => break None,
            },
            _ = ticker.tick() => {
                if last_heard.elapsed() > interval * 2 + interval / 2 {
                    break Some(CloseWhy::Unresponsive);
                }
                if session.ping(b"").await.is_err() {
                    break None;
                }
                pings = pings.wrapping_add(1);
                if pings % RECHECK_EVERY_PINGS == 0 {
                    if let Verdict::Close(why) = gateway.recheck(&conn).await {
                        break Some(why);
                    }
                }
            }
        }
    };
    gateway.disconnect(&conn).await;
    let reason = why.map(|w| CloseReason {
        code: match w {
            CloseWhy::Revoked | CloseWhy::HelloMismatch => CloseCode::Policy,
            CloseWhy::Replaced | CloseWhy::Unresponsive => CloseCode::Normal,
            CloseWhy::Shutdown => CloseCode::Away,
        },
        description: Some(w.reason().to_string()),
    });
    let _ = session.close(reason).await;
}
