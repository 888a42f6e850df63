//! `/ws/client` on the gateway's listener (gateway spec §4.2): the control clients' WebSocket. The
//! caller is checked before the upgrade (a refusal is a plain 401/403, never a 101): a bearer access
//! token or API key (`Authorization`, or `?access_token=` for browsers, which cannot set headers on a
//! WebSocket), and a membership of the org named by `x-org-id` or `?orgId`. The socket's logic lives in
//! `client.rs`; this file only moves frames. Named `socket_routes.rs`, not `routes.rs`, because it is no
//! route of the api role (the access table and the OpenAPI document describe those).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use futures_util::StreamExt;

use super::client::{ClientConn, ClientEdge, Refusal, Verdict};
use crate::domain::common::extract::bearer;
use crate::platform::http::{org_header, ApiError};

/// Largest frame a control client may send (a 50000-character message fits several times).
const MAX_FRAME_BYTES: usize = 1 << 20;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws/client", web::get().to(client_socket));
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unauthenticated => ApiError::unauthenticated(),
            Refusal::Forbidden => ApiError::new(
                StatusCode::FORBIDDEN,
                "ORG_ACCESS_DENIED",
                "You are not a member of this organization",
            ),
            Refusal::Unavailable => ApiError::unavailable(),
        }
    }
}

fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn client_socket(
    edge: web::Data<ClientEdge>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let token = bearer(&req).or_else(|| query_param(&req, "access_token"));
    let org = org_header(&req).or_else(|| query_param(&req, "orgId"));
    let caller = edge.admit(token.as_deref(), org.as_deref()).await?;
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|_| ApiError::bad_request("Expected a WebSocket upgrade"))?;
    let stream = stream.max_frame_size(MAX_FRAME_BYTES);
    let edge = edge.into_inner();
    actix_web::rt::spawn(async move {
        let conn = edge.connect(caller);
        serve(edge, conn, session, stream).await;
    });
    Ok(response)
}

async fn send_all(session: &mut Session, frames: Vec<String>) -> bool {
    for f in frames {
        if session.text(f).await.is_err() {
            return false;
        }
    }
    true
}

/// One client's socket until it closes.
async fn serve(
    edge: Arc<ClientEdge>,
    mut conn: ClientConn,
    mut session: Session,
    mut stream: MessageStream,
) {
    let mut recheck = tokio::time::interval(edge.recheck_every());
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    recheck.tick().await;
    let close: Option<CloseReason> = loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let frames = conn.on_text(&text).await;
                    if !send_all(&mut session, frames).await {
                        break None;
                    }
                }
                Some(Ok(Message::Ping(bytes))) => {
                    if session.pong(&bytes).await.is_err() {
                        break None;
                    }
                }
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "control client socket error");
                    break None;
                }
            },
            Some(msg) = conn.recv() => {
                let frames = conn.on_hub(msg).await;
                if !send_all(&mut session, frames).await {
                    break None;
                }
            }
            _ = recheck.tick() => {
                let (verdict, frames) = conn.recheck().await;
                if verdict == Verdict::Close {
                    break Some(CloseReason {
                        code: CloseCode::Policy,
                        description: Some("No longer allowed in this organization".into()),
                    });
                }
                if !send_all(&mut session, frames).await {
                    break None;
                }
            }
        }
    };
    drop(conn);
    let _ = session.close(close).await;
}
