//! `http.request` (spec Decisions): the real call behind the target policy of [`super::ssrf`], with one
//! deadline for the whole exchange, a response size cap, redirects followed by hand (each hop re-checked)
//! and `{{secret:<name>}}` references in header values that never reach the node output.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use url::Url;

use zeroize::Zeroizing;

use super::context::{ExecCtx, ExecDeps, Outcome};
use super::secret_store;
use super::ssrf::{self, AllowList, Pinned, TargetError};
use crate::domain::common::ids::{OrgId, RunId};
use crate::domain::workflows::dsl::spec::{HttpMethod, HttpRequest};
#[cfg(test)]
use crate::domain::workflows::dsl::NodeSpec;

const MAX_REDIRECTS: usize = 5;
const USER_AGENT: &str = "vespid-worker";
/// Secrets shorter than this are not scrubbed from responses: masking every "ab" would garble them.
const MIN_REDACT_LEN: usize = 4;
/// The original bounds URLs by UTF-16 units; the DSL counts chars, so a URL of many astral characters
/// passes the DSL and is refused here.
const URL_MAX_UTF16: usize = 2000;

fn method(m: HttpMethod) -> Method {
    match m {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Options => Method::OPTIONS,
    }
}

struct Header {
    name: HeaderName,
    value: HeaderValue,
    /// Carries a resolved secret: never sent to another origin after a redirect.
    secret: bool,
}

/// A request as it travels through redirects.
struct Request {
    method: Method,
    url: Url,
    headers: Vec<Header>,
    body: Option<Vec<u8>>,
}

/// What bounds one node's call.
struct Limits<'a> {
    allow: AllowList,
    max_bytes: usize,
    run_id: RunId,
    node_id: &'a str,
}

struct Fetched {
    status: StatusCode,
    headers: Value,
    body: Value,
    truncated: bool,
}

pub async fn run(deps: &ExecDeps, ctx: &ExecCtx<'_>, cfg: Option<&HttpRequest>) -> Outcome {
    let Some(cfg) = cfg else {
        return Outcome::Succeeded(
            json!({"accepted": true, "requestId": format!("{}-request", ctx.node.id)}),
        );
    };
    if cfg.url.encode_utf16().count() > URL_MAX_UTF16 {
        return Outcome::fail("INVALID_NODE_CONFIG", false);
    }
    let Ok(url) = Url::parse(&cfg.url) else {
        return Outcome::fail("INVALID_NODE_CONFIG", false);
    };
    let mut secrets = Vec::new();
    let mut headers =
        match resolve_headers(deps, ctx.org_id, ctx.run_id, &cfg.headers, &mut secrets).await {
            Ok(h) => h,
            Err(o) => return o,
        };
    let body = encode_body(cfg.body.as_ref()).map(|(bytes, content_type)| {
        if !headers.iter().any(|h| h.name == header::CONTENT_TYPE) {
            headers.push(Header {
                name: header::CONTENT_TYPE,
                value: HeaderValue::from_static(content_type),
                secret: false,
            });
        }
        bytes
    });
    let req = Request {
        method: method(cfg.method),
        url,
        headers,
        body,
    };
    let limits = Limits {
        allow: AllowList::parse(&deps.config.http_allow_hosts),
        max_bytes: deps.config.http_max_response_bytes,
        run_id: ctx.run_id,
        node_id: &ctx.node.id,
    };
    let deadline = Duration::from_millis(deps.config.http_timeout_ms);
    let started = Instant::now();
    let outcome = match tokio::time::timeout(deadline, send(req, &limits)).await {
        Err(_) => Outcome::fail("HTTP_TIMEOUT", true),
        Ok(Err(failed)) => failed,
        Ok(Ok(fetched)) => finish(fetched, started.elapsed(), cfg.fail_on_status),
    };
    redact_outcome(outcome, &secrets)
}

/// Resolves `{{secret:<name>}}` references (each name fetched once) and validates names and values.
async fn resolve_headers(
    deps: &ExecDeps,
    org: OrgId,
    run: RunId,
    raw: &BTreeMap<String, String>,
    used: &mut Vec<(String, Zeroizing<String>)>,
) -> Result<Vec<Header>, Outcome> {
    let invalid = || Outcome::fail("INVALID_NODE_CONFIG", false);
    let mut out = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let pieces = template(value).ok_or_else(invalid)?;
        let mut rendered = Zeroizing::new(String::with_capacity(value.len()));
        let mut secret = false;
        for piece in pieces {
            match piece {
                Piece::Text(t) => rendered.push_str(t),
                Piece::Secret(ref_name) => {
                    secret = true;
                    if !used.iter().any(|(n, _)| n == ref_name) {
                        let found = secret_store::by_name(deps, org, run, ref_name).await?;
                        used.push((ref_name.to_string(), found.value));
                    }
                    if let Some((_, v)) = used.iter().find(|(n, _)| n == ref_name) {
                        rendered.push_str(v);
                    }
                }
            }
        }
        let mut value = HeaderValue::from_str(&rendered).map_err(|_| {
            if secret {
                Outcome::fail("SECRET_VALUE_INVALID", false)
            } else {
                invalid()
            }
        })?;
        value.set_sensitive(secret);
        out.push(Header {
            name,
            value,
            secret,
        });
    }
    Ok(out)
}

#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    Secret(&'a str),
}

/// Splits a header value into text and `{{secret:<name>}}` references (name trimmed, not empty). An
/// opening without a closing `}}` is plain text.
fn template(value: &str) -> Option<Vec<Piece<'_>>> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some((before, after)) = rest.split_once("{{secret:") {
        let Some((name, tail)) = after.split_once("}}") else {
            break;
        };
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        if !before.is_empty() {
            out.push(Piece::Text(before));
        }
        out.push(Piece::Secret(name));
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Some(out)
}

/// A JSON string is sent as text, anything else (but `null`) as JSON.
fn encode_body(body: Option<&Value>) -> Option<(Vec<u8>, &'static str)> {
    match body? {
        Value::Null => None,
        Value::String(s) => Some((s.as_bytes().to_vec(), "text/plain; charset=utf-8")),
        other => Some((other.to_string().into_bytes(), "application/json")),
    }
}

async fn send(mut req: Request, limits: &Limits<'_>) -> Result<Fetched, Outcome> {
    let mut redirects = 0;
    loop {
        let pinned = ssrf::check(&req.url, &limits.allow)
            .await
            .map_err(|e| target_failure(e, limits))?;
        let client = client_for(&pinned).map_err(|e| {
            tracing::error!(error = %e, "http client could not be built");
            Outcome::fail("HTTP_REQUEST_FAILED", true)
        })?;
        let mut builder = client
            .request(req.method.clone(), req.url.clone())
            .headers(header_map(&req.headers));
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let resp = builder.send().await.map_err(network_failure)?;
        match redirect_target(&resp, &req.url) {
            Some(next) if redirects < MAX_REDIRECTS => {
                redirects += 1;
                req.follow(resp.status(), next);
            }
            Some(_) => return Err(Outcome::fail("HTTP_TOO_MANY_REDIRECTS", false)),
            None => return read(resp, limits.max_bytes).await,
        }
    }
}

/// A client that can only connect to the checked addresses: the host name is pinned to them, proxies
/// (which would resolve the name again) are off, and redirects are left to [`send`]. Clients are kept per
/// (host, addresses): building one (TLS roots and all) costs more than many requests, and a kept client
/// reuses its connections. A changed DNS answer is a different key, so the pin always holds.
fn client_for(pinned: &Pinned) -> reqwest::Result<reqwest::Client> {
    type Key = (Option<String>, Vec<SocketAddr>);
    static CLIENTS: LazyLock<Mutex<HashMap<Key, reqwest::Client>>> = LazyLock::new(Mutex::default);
    const KEEP: usize = 64;
    let key = (pinned.domain.clone(), pinned.addrs.clone());
    let mut clients = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = clients.get(&key) {
        return Ok(c.clone());
    }
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(USER_AGENT);
    if let Some(domain) = &pinned.domain {
        builder = builder.resolve_to_addrs(domain, &pinned.addrs);
    }
    let client = builder.build()?;
    if clients.len() >= KEEP {
        clients.clear();
    }
    clients.insert(key, client.clone());
    Ok(client)
}

fn header_map(headers: &[Header]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        map.insert(h.name.clone(), h.value.clone());
    }
    map
}

fn redirect_target(resp: &reqwest::Response, base: &Url) -> Option<Url> {
    if !matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = resp.headers().get(header::LOCATION)?.to_str().ok()?;
    base.join(location).ok()
}

impl Request {
    /// Fetch's redirect rules: 303 (and 301/302 after POST) become a bodiless GET; credentials and
    /// secret-bearing headers do not follow the request to another origin.
    fn follow(&mut self, status: StatusCode, next: Url) {
        let to_get = match status.as_u16() {
            303 => self.method != Method::HEAD,
            301 | 302 => self.method == Method::POST,
            _ => false,
        };
        if to_get {
            self.method = Method::GET;
            self.body = None;
            self.headers.retain(|h| {
                ![
                    header::CONTENT_TYPE,
                    header::CONTENT_ENCODING,
                    header::CONTENT_LANGUAGE,
                    header::CONTENT_LOCATION,
                    header::CONTENT_LENGTH,
                ]
                .contains(&h.name)
            });
        }
        if next.origin() != self.url.origin() {
            self.headers.retain(|h| {
                !h.secret
                    && ![
                        header::AUTHORIZATION,
                        header::COOKIE,
                        header::PROXY_AUTHORIZATION,
                    ]
                    .contains(&h.name)
            });
        }
        self.url = next;
    }
}

async fn read(mut resp: reqwest::Response, max_bytes: usize) -> Result<Fetched, Outcome> {
    let status = resp.status();
    let headers = headers_json(resp.headers());
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let hint = resp
        .content_length()
        .and_then(|l| usize::try_from(l).ok())
        .unwrap_or(0)
        .min(max_bytes);
    let mut buf = Vec::with_capacity(hint);
    let mut truncated = false;
    // Read chunk by chunk so a huge (or endless) body costs at most the cap.
    while let Some(chunk) = resp.chunk().await.map_err(network_failure)? {
        if push_capped(&mut buf, &chunk, max_bytes) {
            truncated = true;
            break;
        }
    }
    Ok(Fetched {
        status,
        headers,
        body: decode_body(&buf, content_type.as_deref(), truncated),
        truncated,
    })
}

/// Appends what fits under `cap`; `true` when something had to be cut.
fn push_capped(buf: &mut Vec<u8>, chunk: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(buf.len());
    if chunk.len() > room {
        buf.extend(chunk.iter().take(room));
        true
    } else {
        buf.extend_from_slice(chunk);
        false
    }
}

/// Lower-cased name -> value; repeated headers are joined with ", ".
fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        out.insert(name.as_str().to_ascii_lowercase(), Value::String(joined));
    }
    Value::Object(out)
}

fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// Parsed JSON for a complete JSON response, else text (a cut body is never parsed, and loses a
/// trailing partial UTF-8 sequence rather than gaining a replacement character).
fn decode_body(bytes: &[u8], content_type: Option<&str>, truncated: bool) -> Value {
    if !truncated && is_json(content_type) {
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            return v;
        }
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(e) if truncated && e.error_len().is_none() => {
            String::from_utf8_lossy(bytes.get(..e.valid_up_to()).unwrap_or_default()).into_owned()
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    };
    Value::String(text)
}

fn finish(f: Fetched, elapsed: Duration, fail_on_status: bool) -> Outcome {
    let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let mut out = json!({
        "status": f.status.as_u16(),
        "headers": f.headers,
        "body": f.body,
        "durationMs": duration_ms,
    });
    if let (true, Some(obj)) = (f.truncated, out.as_object_mut()) {
        obj.insert("truncated".into(), Value::Bool(true));
    }
    if f.status.is_success() || !fail_on_status {
        return Outcome::Succeeded(out);
    }
    Outcome::Failed {
        error: format!("HTTP_STATUS_{}", f.status.as_u16()),
        output: Some(out),
        retryable: status_retryable(f.status),
    }
}

/// Server errors, 408 and 429 may pass; other statuses will not change on a retry.
pub(super) fn status_retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

pub(super) fn network_failure(e: reqwest::Error) -> Outcome {
    if e.is_timeout() {
        Outcome::fail("HTTP_TIMEOUT", true)
    } else if e.is_builder() {
        Outcome::fail("HTTP_REQUEST_FAILED", false)
    } else {
        Outcome::fail("HTTP_REQUEST_FAILED", true)
    }
}

fn target_failure(e: TargetError, limits: &Limits<'_>) -> Outcome {
    match e {
        TargetError::Forbidden(reason) => {
            tracing::warn!(run_id = %limits.run_id, node_id = limits.node_id, reason = %reason,
                "http.request target refused");
            Outcome::fail("HTTP_TARGET_FORBIDDEN", false)
        }
        TargetError::Resolve(reason) => {
            tracing::info!(run_id = %limits.run_id, node_id = limits.node_id, reason = %reason,
                "http.request host did not resolve");
            Outcome::fail("HTTP_REQUEST_FAILED", true)
        }
    }
}

/// A response may echo what it was sent (an echo service, an error page quoting the request): secret
/// values used in this call are masked wherever they appear in the output.
fn redact_outcome(outcome: Outcome, secrets: &[(String, Zeroizing<String>)]) -> Outcome {
    let values: Vec<&str> = secrets
        .iter()
        .map(|(_, v)| v.as_str())
        .filter(|v| v.len() >= MIN_REDACT_LEN)
        .collect();
    if values.is_empty() {
        return outcome;
    }
    match outcome {
        Outcome::Succeeded(mut v) => {
            redact(&mut v, &values);
            Outcome::Succeeded(v)
        }
        Outcome::Failed {
            error,
            mut output,
            retryable,
        } => {
            if let Some(v) = output.as_mut() {
                redact(v, &values);
            }
            Outcome::Failed {
                error,
                output,
                retryable,
            }
        }
        blocked @ Outcome::Blocked(_) => blocked,
    }
}

fn redact(v: &mut Value, secrets: &[&str]) {
    let mask = |s: &str| {
        secrets
            .iter()
            .fold(s.to_string(), |acc, secret| acc.replace(secret, "***"))
    };
    match v {
        Value::String(s) => {
            if secrets.iter().any(|secret| s.contains(secret)) {
                *s = mask(s);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| redact(i, secrets)),
        Value::Object(m) => {
            let old = std::mem::take(m);
            for (k, mut item) in old {
                redact(&mut item, secrets);
                m.insert(mask(&k), item);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config the executor receives is the DSL's typed one: what the old executor-side parser
    /// accepted and refused is now decided once, by the DSL.
    #[test]
    fn config_parsing() {
        let parse = |cfg: Value| match crate::domain::workflows::dsl::parse_node(
            &json!({"id": "n", "type": "http.request", "config": cfg}),
        ) {
            Ok(crate::domain::workflows::dsl::Node {
                spec: NodeSpec::HttpRequest(Some(c)),
                ..
            }) => Some(c),
            _ => None,
        };
        let ok = parse(json!({"method": "POST", "url": "https://x.test/a",
            "headers": {"x-a": "1"}, "body": {"k": 1}, "failOnStatus": false, "extra": 1}))
        .unwrap();
        assert_eq!(method(ok.method), Method::POST);
        assert_eq!(
            ok.headers.into_iter().collect::<Vec<_>>(),
            vec![("x-a".to_string(), "1".to_string())]
        );
        assert_eq!(ok.body, Some(json!({"k": 1})));
        assert!(!ok.fail_on_status);
        let min = parse(json!({"method": "GET", "url": "u"})).unwrap();
        assert!(min.fail_on_status);
        assert!(min.headers.is_empty());
        assert_eq!(min.body, None);
        for bad in [
            json!(null),
            json!({"url": "u"}),
            json!({"method": "get", "url": "u"}),
            json!({"method": "TRACE", "url": "u"}),
            json!({"method": "GET"}),
            json!({"method": "GET", "url": ""}),
            json!({"method": "GET", "url": "x".repeat(2001)}),
            json!({"method": "GET", "url": "u", "headers": {"a": 1}}),
            json!({"method": "GET", "url": "u", "headers": {"": "v"}}),
            json!({"method": "GET", "url": "u", "headers": []}),
            json!({"method": "GET", "url": "u", "failOnStatus": "no"}),
        ] {
            assert_eq!(parse(bad.clone()), None, "{bad}");
        }
        assert!(parse(json!({"method": "GET", "url": "x".repeat(2000)})).is_some());
    }

    #[test]
    fn secret_templates() {
        assert_eq!(
            template("Bearer {{secret:api}}").unwrap(),
            vec![Piece::Text("Bearer "), Piece::Secret("api")]
        );
        assert_eq!(
            template("{{secret: a }}:{{secret:b}}!").unwrap(),
            vec![
                Piece::Secret("a"),
                Piece::Text(":"),
                Piece::Secret("b"),
                Piece::Text("!")
            ]
        );
        assert_eq!(template("plain").unwrap(), vec![Piece::Text("plain")]);
        assert_eq!(
            template("x {{secret:open").unwrap(),
            vec![Piece::Text("x {{secret:open")]
        );
        assert_eq!(template("").unwrap(), vec![]);
        assert_eq!(template("{{secret: }}"), None);
        assert_eq!(
            template("{{other:a}}").unwrap(),
            vec![Piece::Text("{{other:a}}")]
        );
    }

    #[test]
    fn truncation_cap() {
        let mut buf = Vec::new();
        assert!(!push_capped(&mut buf, b"abc", 5));
        assert!(!push_capped(&mut buf, b"de", 5), "exactly at the cap");
        assert!(push_capped(&mut buf, b"f", 5));
        assert_eq!(buf, b"abcde");
        let mut buf = Vec::new();
        assert!(push_capped(&mut buf, b"abcdefgh", 3));
        assert_eq!(buf, b"abc");
        let mut buf = Vec::new();
        assert!(push_capped(&mut buf, b"a", 0));
        assert!(buf.is_empty());
        assert!(!push_capped(&mut buf, b"", 0));
    }

    #[test]
    fn body_decoding() {
        assert_eq!(
            decode_body(
                br#"{"a":1}"#,
                Some("application/json; charset=utf-8"),
                false
            ),
            json!({"a": 1})
        );
        assert_eq!(
            decode_body(br#"{"a":1}"#, Some("application/problem+json"), false),
            json!({"a": 1})
        );
        assert_eq!(
            decode_body(br#"{"a":1}"#, Some("text/plain"), false),
            json!(r#"{"a":1}"#)
        );
        assert_eq!(
            decode_body(b"not json", Some("application/json"), false),
            json!("not json")
        );
        assert_eq!(
            decode_body(br#"{"a":1"#, Some("application/json"), true),
            json!(r#"{"a":1"#),
            "a cut JSON body stays text"
        );
        assert_eq!(decode_body(b"", Some("application/json"), false), json!(""));
        // "é" is 0xC3 0xA9: a cut after 0xC3 drops the partial sequence
        assert_eq!(decode_body(b"caf\xC3", None, true), json!("caf"));
        assert_eq!(decode_body(b"caf\xC3", None, false), json!("caf\u{FFFD}"));
        assert_eq!(
            decode_body(b"\xFFok\xC3", None, true),
            json!("\u{FFFD}ok\u{FFFD}")
        );
    }

    #[test]
    fn body_encoding() {
        assert_eq!(encode_body(None), None);
        assert_eq!(encode_body(Some(&json!(null))), None);
        assert_eq!(
            encode_body(Some(&json!("hi"))),
            Some((b"hi".to_vec(), "text/plain; charset=utf-8"))
        );
        assert_eq!(
            encode_body(Some(&json!({"a": [1]}))),
            Some((br#"{"a":[1]}"#.to_vec(), "application/json"))
        );
        assert_eq!(
            encode_body(Some(&json!(false))),
            Some((b"false".to_vec(), "application/json"))
        );
    }

    #[test]
    fn header_map_is_lower_cased_and_joined() {
        let mut h = HeaderMap::new();
        h.append("X-Multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        h.insert("Content-Type", HeaderValue::from_static("text/plain"));
        assert_eq!(
            headers_json(&h),
            json!({"x-multi": "a, b", "content-type": "text/plain"})
        );
    }

    #[test]
    fn statuses() {
        let f = |code: u16| Fetched {
            status: StatusCode::from_u16(code).unwrap(),
            headers: json!({}),
            body: json!(""),
            truncated: false,
        };
        assert!(matches!(
            finish(f(204), Duration::ZERO, true),
            Outcome::Succeeded(_)
        ));
        for (code, retry) in [
            (500, true),
            (503, true),
            (408, true),
            (429, true),
            (404, false),
            (400, false),
            (302, false),
        ] {
            match finish(f(code), Duration::from_millis(7), true) {
                Outcome::Failed {
                    error,
                    output,
                    retryable,
                } => {
                    assert_eq!(error, format!("HTTP_STATUS_{code}"));
                    assert_eq!(retryable, retry, "{code}");
                    let out = output.unwrap();
                    assert_eq!(out["status"], code);
                    assert_eq!(out["durationMs"], 7);
                    assert!(out.get("truncated").is_none());
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            finish(f(500), Duration::ZERO, false),
            Outcome::Succeeded(_)
        ));
        let mut t = f(200);
        t.truncated = true;
        match finish(t, Duration::ZERO, true) {
            Outcome::Succeeded(v) => assert_eq!(v["truncated"], true),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn redaction() {
        let secrets = vec![("n".to_string(), Zeroizing::new("s3cr3t-token".to_string()))];
        let out = redact_outcome(
            Outcome::Succeeded(json!({"body": {"authorization": "Bearer s3cr3t-token",
                "list": ["s3cr3t-token", 1], "s3cr3t-token": true}, "status": 200})),
            &secrets,
        );
        let Outcome::Succeeded(v) = out else {
            panic!("succeeded")
        };
        assert!(!v.to_string().contains("s3cr3t-token"), "{v}");
        assert_eq!(v["body"]["authorization"], "Bearer ***");
        assert_eq!(v["body"]["list"][0], "***");
        assert_eq!(v["body"]["***"], true);
        let failed = redact_outcome(
            Outcome::Failed {
                error: "HTTP_STATUS_401".into(),
                output: Some(json!({"body": "bad token s3cr3t-token"})),
                retryable: false,
            },
            &secrets,
        );
        assert!(!format!("{failed:?}").contains("s3cr3t-token"));
        let short = vec![("n".to_string(), Zeroizing::new("ab".to_string()))];
        assert_eq!(
            redact_outcome(Outcome::Succeeded(json!("abc")), &short),
            Outcome::Succeeded(json!("abc"))
        );
    }

    #[test]
    fn redirects_rewrite_the_request() {
        let header = |name: HeaderName, secret: bool| Header {
            name,
            value: HeaderValue::from_static("v"),
            secret,
        };
        let mut req = Request {
            method: Method::POST,
            url: Url::parse("http://a.test/x").unwrap(),
            headers: vec![
                header(header::CONTENT_TYPE, false),
                header(header::AUTHORIZATION, false),
                header(HeaderName::from_static("x-api-key"), true),
                header(HeaderName::from_static("x-plain"), false),
            ],
            body: Some(b"{}".to_vec()),
        };
        req.follow(
            StatusCode::TEMPORARY_REDIRECT,
            Url::parse("http://a.test/y").unwrap(),
        );
        assert_eq!(req.method, Method::POST, "307 keeps the method");
        assert!(req.body.is_some());
        assert_eq!(req.headers.len(), 4, "same origin keeps everything");
        req.follow(StatusCode::FOUND, Url::parse("http://a.test/z").unwrap());
        assert_eq!(req.method, Method::GET, "302 after POST becomes GET");
        assert!(req.body.is_none());
        assert_eq!(req.headers.len(), 3, "content-type dropped");
        req.follow(
            StatusCode::MOVED_PERMANENTLY,
            Url::parse("http://b.test/").unwrap(),
        );
        let names: Vec<&str> = req.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, vec!["x-plain"], "credentials stay behind");
        assert_eq!(req.url.as_str(), "http://b.test/");

        let mut head = Request {
            method: Method::HEAD,
            url: Url::parse("http://a.test/").unwrap(),
            headers: vec![],
            body: None,
        };
        head.follow(
            StatusCode::SEE_OTHER,
            Url::parse("http://a.test/b").unwrap(),
        );
        assert_eq!(head.method, Method::HEAD);
        let mut put = Request {
            method: Method::PUT,
            url: Url::parse("http://a.test/").unwrap(),
            headers: vec![],
            body: Some(vec![1]),
        };
        put.follow(
            StatusCode::SEE_OTHER,
            Url::parse("http://a.test/b").unwrap(),
        );
        assert_eq!(put.method, Method::GET);
        assert!(put.body.is_none());
    }
}
