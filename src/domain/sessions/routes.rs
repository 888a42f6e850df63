//! `/v1/orgs/{orgId}/sessions…` (gateway spec §4.1): any member creates and reads the org's sessions
//! and their events. The control-client socket is served by the gateway, in `socket_routes.rs`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::model::{
    Limits, NewSession, SessionView, ToolCalling, DEFAULT_ENGINE, ENGINES, PROVIDERS,
};
use super::{parse_event_cursor, EventPage, SessionError, Sessions};
use crate::domain::common::access::OrgCtx;
use crate::domain::common::ids::{AgentSessionId, SecretId};
use crate::domain::common::page::{self, query_map, Page};
use crate::platform::http::openapi::{BadRequest, ErrorBody};
use crate::platform::http::{path_uuid, ApiError, JsonBody};
use crate::platform::validation::{parse_uuid, Invalid};

const INVALID: &str = "Invalid session payload";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/orgs/{orgId}/sessions", web::post().to(create))
        .route("/v1/orgs/{orgId}/sessions", web::get().to(list))
        .route("/v1/orgs/{orgId}/sessions/{sessionId}", web::get().to(get))
        .route(
            "/v1/orgs/{orgId}/sessions/{sessionId}/events",
            web::get().to(events),
        );
}

fn not_found() -> ApiError {
    ApiError::not_found("Session not found")
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound => not_found(),
            SessionError::SecretNotFound => ApiError::new(
                StatusCode::BAD_REQUEST,
                "SECRET_NOT_FOUND",
                "Secret not found",
            ),
            SessionError::ToolsetNotFound => ApiError::new(
                StatusCode::BAD_REQUEST,
                "TOOLSET_NOT_FOUND",
                "Toolset not found",
            ),
            SessionError::InvalidMessage => ApiError::bad_request("Invalid message"),
            e @ SessionError::Secrets(_) => ApiError::internal_from(e),
            SessionError::Db(e) => e.into(),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Reads one object's fields, recording problems under `<prefix><key>`.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'static str,
}

impl<'a> Fields<'a> {
    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn string(
        &self,
        inv: &mut Invalid,
        key: &str,
        (min, max): (usize, usize),
        required: bool,
    ) -> Option<String> {
        match self.obj.get(key) {
            None if required => {
                inv.field(&self.name(key), "Required");
                None
            }
            None => None,
            Some(Value::String(s)) => {
                let n = s.chars().count();
                if n < min {
                    inv.field(
                        &self.name(key),
                        format!("String must contain at least {min} character(s)"),
                    );
                    None
                } else if n > max {
                    inv.field(
                        &self.name(key),
                        format!("String must contain at most {max} character(s)"),
                    );
                    None
                } else {
                    Some(s.clone())
                }
            }
            Some(v) => {
                inv.field(
                    &self.name(key),
                    format!("Expected string, received {}", type_name(v)),
                );
                None
            }
        }
    }

    fn one_of(&self, inv: &mut Invalid, key: &str, allowed: &[&str]) -> Option<String> {
        let s = self.string(inv, key, (0, usize::MAX), false)?;
        if allowed.contains(&s.as_str()) {
            return Some(s);
        }
        let list: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
        inv.field(
            &self.name(key),
            format!(
                "Invalid enum value. Expected {}, received '{s}'",
                list.join(" | ")
            ),
        );
        None
    }

    fn uuid(&self, inv: &mut Invalid, key: &str) -> Option<uuid::Uuid> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                let id = parse_uuid(s);
                if id.is_none() {
                    inv.field(&self.name(key), "Invalid uuid");
                }
                id
            }
            Some(v) => {
                inv.field(
                    &self.name(key),
                    format!("Expected string, received {}", type_name(v)),
                );
                None
            }
        }
    }

    fn object(
        &self,
        inv: &mut Invalid,
        key: &str,
        required: bool,
    ) -> Option<&'a Map<String, Value>> {
        match self.obj.get(key) {
            None if required => {
                inv.field(&self.name(key), "Required");
                None
            }
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(v) => {
                inv.field(
                    &self.name(key),
                    format!("Expected object, received {}", type_name(v)),
                );
                None
            }
        }
    }

    fn strings(
        &self,
        inv: &mut Invalid,
        key: &str,
        max_items: usize,
        (min, max): (usize, usize),
    ) -> Option<Vec<String>> {
        let v = self.obj.get(key)?;
        let Value::Array(items) = v else {
            inv.field(
                &self.name(key),
                format!("Expected array, received {}", type_name(v)),
            );
            return None;
        };
        if items.len() > max_items {
            inv.field(
                &self.name(key),
                format!("Array must contain at most {max_items} element(s)"),
            );
            return None;
        }
        let ok = items.iter().all(|i| {
            i.as_str()
                .is_some_and(|s| (min..=max).contains(&s.chars().count()))
        });
        if !ok {
            inv.field(
                &self.name(key),
                format!("Expected strings of {min} to {max} character(s)"),
            );
            return None;
        }
        Some(
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
        )
    }
}

/// `limits`: an object of known limits, each an integer in its range; missing ones take the defaults.
fn parse_limits(inv: &mut Invalid, v: Option<&Value>) -> Limits {
    let mut out = Limits::default();
    let obj = match v {
        None | Some(Value::Null) => return out,
        Some(Value::Object(m)) => m,
        Some(v) => {
            inv.field(
                "limits",
                format!("Expected object, received {}", type_name(v)),
            );
            return out;
        }
    };
    let unknown: Vec<String> = obj
        .keys()
        .filter(|k| !Limits::RANGES.iter().any(|(n, _, _)| n == k))
        .map(|k| format!("'{k}'"))
        .collect();
    if !unknown.is_empty() {
        inv.field(
            "limits",
            format!("Unrecognized key(s) in object: {}", unknown.join(", ")),
        );
    }
    for (name, lo, hi) in Limits::RANGES {
        let Some(v) = obj.get(name) else { continue };
        let field = format!("limits.{name}");
        let Some(n) = v.as_i64().filter(|_| v.is_i64() || v.is_u64()) else {
            inv.field(&field, "Expected an integer");
            continue;
        };
        if n < lo || n > hi {
            inv.field(&field, format!("Number must be between {lo} and {hi}"));
            continue;
        }
        match name {
            "maxTurns" => out.max_turns = n,
            "maxToolCalls" => out.max_tool_calls = n,
            "timeoutMs" => out.timeout_ms = n,
            "maxOutputChars" => out.max_output_chars = n,
            _ => out.max_runtime_chars = n,
        }
    }
    out
}

/// `executorSelector` as in gateway spec 2.2; stored with its known keys only. Decision (the default
/// pool rule of the gateway spec's Decisions, as for workflow nodes): no selector, or one without a
/// `pool`, is stored without a pool, so the gateway picks the org's own connected executors first and
/// the managed pool only when there are none; an explicit pool is obeyed exactly.
fn parse_selector(inv: &mut Invalid, f: &Fields<'_>) -> Value {
    let Some(sel) = f.object(inv, "executorSelector", false) else {
        return json!({});
    };
    let s = Fields {
        obj: sel,
        prefix: "executorSelector.",
    };
    let mut out = Map::new();
    if let Some(pool) = s.one_of(inv, "pool", &["managed", "byon"]) {
        out.insert("pool".into(), json!(pool));
    }
    if let Some(l) = s.strings(inv, "labels", 50, (1, 64)) {
        out.insert("labels".into(), json!(l));
    }
    for key in ["group", "tag"] {
        if let Some(v) = s.string(inv, key, (1, 64), false) {
            out.insert(key.into(), json!(v));
        }
    }
    if let Some(id) = s.uuid(inv, "executorId") {
        out.insert("executorId".into(), json!(id));
    }
    Value::Object(out)
}

/// The create body (spec 4.1 plus `llm.auth.secretId` and `llm.toolCalling`).
fn parse_new_session(body: &Value) -> Result<NewSession, ApiError> {
    let mut inv = Invalid::default();
    let Value::Object(obj) = body else {
        inv.form(format!("Expected object, received {}", type_name(body)));
        inv.finish(INVALID)?;
        return Err(ApiError::bad_request(INVALID));
    };
    let f = Fields { obj, prefix: "" };
    let title = f.string(&mut inv, "title", (0, 200), false);
    let engine = f.one_of(&mut inv, "engineId", ENGINES);
    let toolset = f.uuid(&mut inv, "toolsetId");
    let llm = f.object(&mut inv, "llm", true);
    let prompt = f.object(&mut inv, "prompt", true);
    let tools = f.object(&mut inv, "tools", true);
    let limits = parse_limits(&mut inv, obj.get("limits"));
    let selector = parse_selector(&mut inv, &f);
    let (mut provider, mut model, mut secret, mut calling) = (None, None, None, None);
    if let Some(llm) = llm {
        let l = Fields {
            obj: llm,
            prefix: "llm.",
        };
        provider = l.one_of(&mut inv, "provider", PROVIDERS);
        model = l.string(&mut inv, "model", (1, 120), true);
        calling = l.one_of(&mut inv, "toolCalling", &["native", "json"]);
        if let Some(auth) = l.object(&mut inv, "auth", false) {
            let a = Fields {
                obj: auth,
                prefix: "llm.auth.",
            };
            secret = a.uuid(&mut inv, "secretId").map(SecretId::from);
        }
    }
    let (mut system, mut instructions) = (None, None);
    if let Some(prompt) = prompt {
        let p = Fields {
            obj: prompt,
            prefix: "prompt.",
        };
        system = p.string(&mut inv, "system", (0, 200_000), false);
        instructions = p.string(&mut inv, "instructions", (1, 200_000), true);
    }
    let allow = tools.and_then(|t| {
        Fields {
            obj: t,
            prefix: "tools.",
        }
        .strings(&mut inv, "allow", 200, (1, 120))
    });
    inv.finish(INVALID)?;
    let (Some(model), Some(instructions)) = (model, instructions) else {
        return Err(ApiError::bad_request(INVALID));
    };
    Ok(NewSession {
        title: title.unwrap_or_default(),
        engine_id: engine.unwrap_or_else(|| DEFAULT_ENGINE.to_string()),
        toolset_id: toolset,
        llm_provider: provider.unwrap_or_else(|| "openai".to_string()),
        llm_model: model,
        llm_secret_id: secret,
        tool_calling: calling
            .as_deref()
            .and_then(ToolCalling::parse)
            .unwrap_or(ToolCalling::Native),
        prompt_system: system,
        prompt_instructions: instructions,
        tools_allow: allow.unwrap_or_default(),
        limits,
        executor_selector: selector,
    })
}

/// `limit` as the original reads it: a number, floored and clamped to `1..=max`; anything else is
/// `default`.
fn clamped_limit(raw: Option<&String>, default: i64, max: i64) -> i64 {
    raw.and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|n| n.is_finite())
        .map(|n| (n.floor() as i64).clamp(1, max))
        .unwrap_or(default)
}

fn session_id(req: &HttpRequest) -> Result<AgentSessionId, ApiError> {
    path_uuid(req, "sessionId", not_found).map(AgentSessionId::from)
}

// Wire shapes for the OpenAPI document (the handlers build them with `json!`).

/// `POST /v1/orgs/{orgId}/sessions`.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateAgentSessionRequest {
    /// At most 200 characters.
    pub title: Option<String>,
    /// `gateway.loop.v2` (default), `gateway.codex.v2` or `gateway.claude.v2`.
    pub engine_id: Option<String>,
    /// Refused unless absent or `null` (`TOOLSET_NOT_FOUND`): there are no toolsets yet.
    pub toolset_id: Option<uuid::Uuid>,
    pub llm: SessionLlmRequest,
    pub prompt: SessionPromptRequest,
    pub tools: SessionToolsRequest,
    /// Known keys only; each defaulted and range-checked.
    pub limits: Option<Limits>,
    /// `{pool?: "managed"|"byon", labels?, group?, tag?, executorId?}`; default `{}` (the org's own
    /// connected executors first, else the managed pool).
    #[schema(value_type = Option<Object>)]
    pub executor_selector: Option<Value>,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionLlmRequest {
    /// `openai` (default), `anthropic` or `gemini`.
    pub provider: Option<String>,
    /// 1..120 characters.
    pub model: String,
    /// `native` (default) or `json`.
    pub tool_calling: Option<String>,
    /// The org's connector secret holding the provider key (else the install's own key is used).
    pub auth: Option<SessionLlmAuthRequest>,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionLlmAuthRequest {
    pub secret_id: Option<uuid::Uuid>,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionPromptRequest {
    pub system: Option<String>,
    /// 1..200000 characters.
    pub instructions: String,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionToolsRequest {
    /// Tool names, at most 200 of 1..120 characters.
    pub allow: Option<Vec<String>>,
}

#[derive(utoipa::ToSchema)]
pub struct AgentSessionBody {
    pub session: SessionView,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSessionList {
    pub sessions: Vec<SessionView>,
    /// `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSessionEventList {
    pub events: Vec<super::model::EventView>,
    /// `null` on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/orgs/{orgId}/sessions", operation_id = "createSession", tag = "sessions",
    params(("orgId" = Uuid, Path, description = "The organization")),
    request_body = CreateAgentSessionRequest,
    responses(
        (status = 201, description = "Created, with its `session_created` event (seq 0)", body = AgentSessionBody),
        (status = 400, response = BadRequest),
    )
)]
async fn create(
    sessions: web::Data<Sessions>,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let new = parse_new_session(&body.0)?;
    let session = sessions.create(&ctx, new).await?;
    Ok(HttpResponse::Created().json(json!({ "session": session })))
}

#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/sessions", operation_id = "listSessions", tag = "sessions",
    params(
        ("orgId" = Uuid, Path, description = "The organization"),
        ("limit" = Option<i64>, Query, description = "Page size, clamped to 1..200 (default 50)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page (an unreadable one is ignored)"),
    ),
    responses((status = 200, description = "Most recently updated first", body = AgentSessionList))
)]
async fn list(
    sessions: web::Data<Sessions>,
    req: HttpRequest,
    ctx: OrgCtx,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let q = query_map(req.query_string(), &["limit", "cursor"])?;
    let page = Page {
        limit: clamped_limit(q.get("limit"), 50, 200),
        after: q.get("cursor").and_then(|c| page::decode(c).ok().flatten()),
    };
    let (list, next) = sessions.list(&ctx, page).await?;
    Ok(HttpResponse::Ok().json(json!({ "sessions": list, "nextCursor": next })))
}

#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/sessions/{sessionId}", operation_id = "getSession", tag = "sessions",
    params(("orgId" = Uuid, Path, description = "The organization"), ("sessionId" = String, Path, description = "The session")),
    responses(
        (status = 200, description = "The session", body = AgentSessionBody),
        (status = 404, description = "`NOT_FOUND` \"Session not found\" (also for an id that is not a UUID)", body = ErrorBody),
    )
)]
async fn get(
    sessions: web::Data<Sessions>,
    req: HttpRequest,
    ctx: OrgCtx,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let id = session_id(&req)?;
    let session = sessions.get(&ctx, id).await?;
    Ok(HttpResponse::Ok().json(json!({ "session": session })))
}

#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/sessions/{sessionId}/events", operation_id = "listSessionEvents", tag = "sessions",
    params(
        ("orgId" = Uuid, Path, description = "The organization"),
        ("sessionId" = String, Path, description = "The session"),
        ("limit" = Option<i64>, Query, description = "Page size, clamped to 1..500 (default 200)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page: events with a higher seq follow"),
    ),
    responses(
        (status = 200, description = "Ascending by seq; an unknown session has none", body = AgentSessionEventList),
        (status = 404, description = "`NOT_FOUND` for an id that is not a UUID", body = ErrorBody),
    )
)]
async fn events(
    sessions: web::Data<Sessions>,
    req: HttpRequest,
    ctx: OrgCtx,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let id = session_id(&req)?;
    let q = query_map(req.query_string(), &["limit", "cursor"])?;
    let page = EventPage {
        limit: clamped_limit(q.get("limit"), 200, 500),
        after: q.get("cursor").and_then(|c| parse_event_cursor(c)),
    };
    let (list, next) = sessions.events(&ctx, id, page).await?;
    Ok(HttpResponse::Ok().json(json!({ "events": list, "nextCursor": next })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({
            "llm": { "model": "gpt-4.1-mini" },
            "prompt": { "instructions": "Be useful." },
            "tools": {},
        })
    }

    #[test]
    fn defaults_fill_a_minimal_body() {
        let s = parse_new_session(&base()).unwrap();
        assert_eq!(s.engine_id, "gateway.loop.v2");
        assert_eq!(s.llm_provider, "openai");
        assert_eq!(s.tool_calling, ToolCalling::Native);
        assert_eq!(s.limits, Limits::default());
        assert_eq!(s.executor_selector, json!({}));
    }

    #[test]
    fn limits_outside_their_ranges_or_unknown_are_refused() {
        for limits in [
            json!({ "maxTurns": 0 }),
            json!({ "maxTurns": 65 }),
            json!({ "maxToolCalls": 201 }),
            json!({ "timeoutMs": 999 }),
            json!({ "maxOutputChars": 127 }),
            json!({ "maxRuntimeChars": 2_000_001 }),
            json!({ "maxTurns": 1.5 }),
            json!({ "nope": 1 }),
            json!([]),
        ] {
            let mut b = base();
            b["limits"] = limits.clone();
            assert!(parse_new_session(&b).is_err(), "{limits}");
        }
        let mut b = base();
        b["limits"] = json!({ "maxTurns": 3, "maxToolCalls": 0 });
        let s = parse_new_session(&b).unwrap();
        assert_eq!((s.limits.max_turns, s.limits.max_tool_calls), (3, 0));
        assert_eq!(s.limits.timeout_ms, 60_000);
    }

    #[test]
    fn limit_is_clamped_like_the_original() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(clamped_limit(None, 50, 200), 50);
        assert_eq!(clamped_limit(s("0").as_ref(), 50, 200), 1);
        assert_eq!(clamped_limit(s("999").as_ref(), 50, 200), 200);
        assert_eq!(clamped_limit(s("2.7").as_ref(), 50, 200), 2);
        assert_eq!(clamped_limit(s("abc").as_ref(), 50, 200), 50);
    }
}
