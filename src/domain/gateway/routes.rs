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
use super::objects::{self, ObjectError};
use super::{CloseWhy, Connection, Gateway, GatewayError, Outbound, Verdict};
use crate::domain::common::extract::bearer;
use crate::platform::http::ApiError;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws/executor", web::get().to(executor_socket))
        .route("/healthz", web::get().to(healthz))
        .route("/internal/v1/dispatch", web::post().to(dispatch_sync))
        .route(
            "/internal/v1/dispatch-async",
            web::post().to(dispatch_async),
        )
        .route("/internal/v1/results/{request_id}", web::get().to(result))
        .route("/workspace-objects/{key:.*}", web::get().to(get_object))
        .route("/workspace-objects/{key:.*}", web::put().to(put_object));
}

#[derive(serde::Deserialize)]
struct Signed {
    expires: i64,
    signature: String,
}

impl From<ObjectError> for ApiError {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::Expired => ApiError::new(
                StatusCode::FORBIDDEN,
                "REQUEST_EXPIRED",
                "Request has expired",
            ),
            ObjectError::BadSignature => ApiError::new(
                StatusCode::FORBIDDEN,
                "SIGNATURE_DOES_NOT_MATCH",
                "The request signature does not match",
            ),
            ObjectError::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "NO_SUCH_KEY",
                "The specified key does not exist",
            ),
            ObjectError::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "ENTITY_TOO_LARGE",
                "Your proposed upload exceeds the maximum allowed size",
            ),
            ObjectError::Io(_) => ApiError::internal_from(e),
        }
    }
}

/// A snapshot download through a signed URL.
async fn get_object(
    gateway: web::Data<Gateway>,
    path: web::Path<String>,
    q: web::Query<Signed>,
) -> Result<HttpResponse, ApiError> {
    let key = path.into_inner();
    let store = gateway.objects().local().ok_or(ObjectError::NotFound)?;
    store.verify("GET", &key, "", q.expires, &q.signature)?;
    let bytes = tokio::fs::read(store.path_of(&key)?)
        .await
        .map_err(|_| ObjectError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type(objects::CONTENT_TYPE)
        .body(bytes))
}

/// A snapshot upload through a signed URL: streamed to a temporary file (never past the size cap),
/// then renamed into place, so a reader never sees half an object.
async fn put_object(
    gateway: web::Data<Gateway>,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<Signed>,
    mut body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let key = path.into_inner();
    let store = gateway.objects().local().ok_or(ObjectError::NotFound)?;
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    store.verify("PUT", &key, content_type, q.expires, &q.signature)?;
    let (tmp, dest) = store.staging(&key).await?;
    let written = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| ObjectError::Io(e.to_string()))?;
        let mut size: u64 = 0;
        let mut digest = sha2::Sha256::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ObjectError::Io(e.to_string()))?;
            size += chunk.len() as u64;
            digest.update(&chunk);
            if size > store.max_bytes {
                return Err(ObjectError::TooLarge);
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| ObjectError::Io(e.to_string()))?;
        }
        file.sync_all()
            .await
            .map_err(|e| ObjectError::Io(e.to_string()))?;
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| ObjectError::Io(e.to_string()))?;
        Ok::<_, ObjectError>((size, hex::encode(digest.finalize())))
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    let (size, digest) = written?;
    // Like S3's ETag: a digest of the content, quoted.
    let etag = format!("\"{digest}\"");
    tracing::debug!(key = %key, bytes = size, "workspace object stored");
    Ok(HttpResponse::Ok().insert_header(("etag", etag)).finish())
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
