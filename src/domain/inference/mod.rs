//! Provider-neutral LLM inference: one request shape for OpenAI-compatible chat completions, Anthropic
//! messages and Google Gemini, native tool calls, streaming text deltas, deadlines, retries and prices.
//! A leaf domain: it knows no sessions, runs or orgs; callers resolve credentials and record usage.

mod anthropic;
pub mod config;
mod gemini;
mod openai;
pub mod pricing;
mod retry;
pub mod sse;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument;

pub use config::InferenceConfig;
pub use pricing::PriceTable;

use retry::{AttemptError, Next};
use sse::{SseEvent, SseParser};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
        }
    }

    /// The prefix of this provider's error codes (`OPENAI_REQUEST_FAILED:429`, …).
    pub fn code_prefix(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI",
            Provider::Anthropic => "ANTHROPIC",
            Provider::Gemini => "GEMINI",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?} (expected openai, anthropic or gemini)")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "openai" => Ok(Provider::OpenAi),
            "anthropic" => Ok(Provider::Anthropic),
            "gemini" => Ok(Provider::Gemini),
            other => Err(UnknownProvider(other.to_string())),
        }
    }
}

/// A provider key and, for OpenAI-compatible servers and proxies, where to send it. `Debug` shows no key.
#[derive(Clone)]
pub struct Credential {
    pub api_key: zeroize::Zeroizing<String>,
    pub base_url: Option<String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("api_key", &"***")
            .field("base_url", &self.base_url)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    System(String),
    User(String),
    Assistant {
        text: String,
        tool_calls: Vec<ToolCall>,
    },
    ToolResult {
        call_id: String,
        name: String,
        content: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: an object normally; a JSON string holding the raw text when
    /// the model produced arguments that are not JSON (the caller reports that back to the model).
    pub arguments: Value,
}

#[derive(Debug)]
pub struct ChatRequest {
    pub provider: Provider,
    pub model: String,
    pub credential: Credential,
    pub messages: Vec<Message>,
    /// Empty: plain text chat (no `tools` sent).
    pub tools: Vec<ToolSpec>,
    pub max_output_tokens: Option<u32>,
    pub deadline: Instant,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    /// The whole call, retries and waits included.
    pub latency_ms: u64,
    /// Time spent waiting on the provider (sum over attempts).
    pub provider_ms: u64,
    pub attempts: u32,
}

/// Assistant text as it is generated, in order; the chunks concatenate to the final text.
pub type Deltas = tokio::sync::mpsc::UnboundedSender<String>;

/// A failed call. `code` is the stable part (`OPENAI_REQUEST_FAILED:429`, `LLM_TIMEOUT`, …) and the only
/// thing `Display` prints; `detail` is for logs (truncated provider text, never a key or header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferenceError {
    pub code: String,
    /// A later call may succeed (rate limit, outage, timeout); false for bad requests and bad answers.
    pub retryable: bool,
    pub detail: String,
}

impl fmt::Display for InferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)
    }
}

impl std::error::Error for InferenceError {}

impl InferenceError {
    pub(crate) fn new(code: impl Into<String>, retryable: bool, detail: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            retryable,
            detail: detail.into(),
        }
    }

    pub fn timeout() -> Self {
        Self::new("LLM_TIMEOUT", true, "the call's deadline passed")
    }
}

pub trait Inference: Send + Sync {
    /// One chat completion. With `deltas`, the call streams and sends text chunks as they arrive.
    fn complete<'a>(
        &'a self,
        req: ChatRequest,
        deltas: Option<Deltas>,
    ) -> BoxFuture<'a, Result<ChatResponse, InferenceError>>;
}

/// The HTTP implementation of [`Inference`]: one shared connection pool for every provider.
pub struct InferenceClient {
    http: reqwest::Client,
    config: InferenceConfig,
    prices: PriceTable,
}

/// The largest non-streamed answer read (a misbehaving endpoint cannot make us buffer without bound).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Provider error bodies are cut to this many characters before they reach `detail`.
const DETAIL_MAX_CHARS: usize = 300;

impl InferenceClient {
    pub fn new(config: InferenceConfig) -> Self {
        // The start-up validation refuses a bad `prices`; here a bad one just falls back to the built-ins.
        let prices = match PriceTable::with_overrides(&config.prices) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "inference.prices ignored");
                PriceTable::default()
            }
        };
        // Building fails only when the TLS backend cannot initialise, and then no client can be built.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("vespid-inference")
            .build()
            .unwrap_or_default();
        Self {
            http,
            config,
            prices,
        }
    }

    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    pub fn config(&self) -> &InferenceConfig {
        &self.config
    }

    async fn run(
        &self,
        req: ChatRequest,
        deltas: Option<Deltas>,
    ) -> Result<ChatResponse, InferenceError> {
        let started = Instant::now();
        let p = req.provider;
        let mut sink = DeltaSink {
            tx: deltas,
            emitted: false,
        };
        let call = self.build(&req, sink.tx.is_some());
        let mut provider_time = Duration::ZERO;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let now = Instant::now();
            let remaining = req.deadline.saturating_duration_since(now);
            if remaining.is_zero() {
                return Err(InferenceError::timeout());
            }
            let cap = Duration::from_millis(self.config.timeout_ms);
            let per_attempt = remaining.min(cap);
            let outcome =
                tokio::time::timeout(per_attempt, self.attempt(&call, &req, &mut sink)).await;
            provider_time += now.elapsed();
            let err = match outcome {
                Ok(Ok(parsed)) => {
                    let resp = ChatResponse {
                        text: parsed.text,
                        tool_calls: parsed.tool_calls,
                        usage: parsed.usage,
                        latency_ms: millis(started.elapsed()),
                        provider_ms: millis(provider_time),
                        attempts: attempt,
                    };
                    tracing::debug!(
                        attempts = attempt,
                        latency_ms = resp.latency_ms,
                        input_tokens = resp.usage.input_tokens,
                        output_tokens = resp.usage.output_tokens,
                        tool_calls = resp.tool_calls.len(),
                        "llm call done"
                    );
                    return Ok(resp);
                }
                Ok(Err(e)) => e,
                Err(_) if Instant::now() >= req.deadline => return Err(InferenceError::timeout()),
                Err(_) => AttemptError::AttemptTimeout(per_attempt),
            };
            let remaining = req.deadline.saturating_duration_since(Instant::now());
            let jitter = rand::random::<u64>() % 100;
            match retry::decide(
                p,
                err,
                attempt,
                self.config.max_attempts,
                remaining,
                sink.emitted,
                jitter,
            ) {
                // Logged where the caller handles it; provider text may quote the prompt, so only the code here.
                Next::Fail(e) => {
                    tracing::debug!(attempts = attempt, code = %e.code, "llm call failed");
                    return Err(e);
                }
                Next::Retry(wait, why) => {
                    tracing::info!(attempt, wait_ms = millis(wait), reason = %why, "llm call retried");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn build(&self, req: &ChatRequest, stream: bool) -> HttpCall {
        let base = req
            .credential
            .base_url
            .as_deref()
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| self.config.base_url(req.provider))
            .trim_end_matches('/')
            .to_string();
        match req.provider {
            Provider::OpenAi => openai::request(req, &base, stream),
            Provider::Anthropic => anthropic::request(req, &base, stream),
            Provider::Gemini => gemini::request(req, &base, stream),
        }
    }

    /// One HTTP exchange: send, check the status, read and decode the answer (streamed or not).
    async fn attempt(
        &self,
        call: &HttpCall,
        req: &ChatRequest,
        sink: &mut DeltaSink,
    ) -> Result<Parsed, AttemptError> {
        let key = req.credential.api_key.as_str();
        let mut builder = self.http.post(&call.url).json(&call.body);
        builder = match req.provider {
            Provider::OpenAi => builder.bearer_auth(key),
            Provider::Anthropic => builder
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01"),
            Provider::Gemini => builder.header("x-goog-api-key", key),
        };
        let mut resp = builder.send().await.map_err(network)?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, std::time::SystemTime::now()));
            let body = read_capped(&mut resp, 4096).await.unwrap_or_default();
            return Err(AttemptError::Status {
                status: status.as_u16(),
                retry_after,
                body: redact(&String::from_utf8_lossy(&body), key),
            });
        }
        if sink.tx.is_none() {
            let body = read_capped(&mut resp, MAX_BODY_BYTES).await?;
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| AttemptError::Invalid(format!("not JSON: {e}")))?;
            return match req.provider {
                Provider::OpenAi => openai::parse(&value),
                Provider::Anthropic => anthropic::parse(&value),
                Provider::Gemini => gemini::parse(&value),
            };
        }
        let mut parser = SseParser::new();
        let mut decoder = Decoder::new(req.provider);
        while let Some(chunk) = resp.chunk().await.map_err(network)? {
            for ev in parser.push(&chunk) {
                decoder.event(&ev, sink)?;
            }
            if decoder.done() {
                break;
            }
        }
        for ev in parser.finish() {
            decoder.event(&ev, sink)?;
        }
        decoder.finish()
    }
}

impl Inference for InferenceClient {
    fn complete<'a>(
        &'a self,
        req: ChatRequest,
        deltas: Option<Deltas>,
    ) -> BoxFuture<'a, Result<ChatResponse, InferenceError>> {
        let span = tracing::info_span!(
            "llm",
            provider = req.provider.as_str(),
            model = %req.model,
            stream = deltas.is_some()
        );
        self.run(req, deltas).instrument(span).boxed()
    }
}

/// The wire request of one call, built once and sent on every attempt. The key is added per attempt, so
/// this never holds it.
#[derive(Debug)]
pub(crate) struct HttpCall {
    pub url: String,
    pub body: Value,
}

/// A provider's answer in neutral terms.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Parsed {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
}

impl Parsed {
    /// An answer with neither text nor a tool call is `_RESPONSE_EMPTY`.
    pub(crate) fn checked(self) -> Result<Self, AttemptError> {
        if self.text.trim().is_empty() && self.tool_calls.is_empty() {
            Err(AttemptError::Empty)
        } else {
            Ok(self)
        }
    }
}

pub(crate) struct DeltaSink {
    tx: Option<Deltas>,
    /// A delta reached the caller: the attempt can no longer be retried without repeating text.
    emitted: bool,
}

impl DeltaSink {
    pub(crate) fn send(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx {
            // A caller that stopped listening does not stop the call: the final answer is still returned.
            let _ = tx.send(text.to_string());
            self.emitted = true;
        }
    }
}

/// The streaming decoder of each provider.
enum Decoder {
    OpenAi(openai::Stream),
    Anthropic(anthropic::Stream),
    Gemini(gemini::Stream),
}

impl Decoder {
    fn new(p: Provider) -> Self {
        match p {
            Provider::OpenAi => Decoder::OpenAi(openai::Stream::default()),
            Provider::Anthropic => Decoder::Anthropic(anthropic::Stream::default()),
            Provider::Gemini => Decoder::Gemini(gemini::Stream::default()),
        }
    }

    fn event(&mut self, ev: &SseEvent, sink: &mut DeltaSink) -> Result<(), AttemptError> {
        match self {
            Decoder::OpenAi(s) => s.event(ev, sink),
            Decoder::Anthropic(s) => s.event(ev, sink),
            Decoder::Gemini(s) => s.event(ev, sink),
        }
    }

    fn done(&self) -> bool {
        match self {
            Decoder::OpenAi(s) => s.done,
            Decoder::Anthropic(s) => s.done,
            Decoder::Gemini(_) => false,
        }
    }

    fn finish(self) -> Result<Parsed, AttemptError> {
        match self {
            Decoder::OpenAi(s) => s.finish(),
            Decoder::Anthropic(s) => s.finish(),
            Decoder::Gemini(s) => s.finish(),
        }
    }
}

fn network(e: reqwest::Error) -> AttemptError {
    // `without_url`: the URL is ours and holds no key, but an error text has no business carrying it.
    AttemptError::Network(e.without_url().to_string())
}

async fn read_capped(resp: &mut reqwest::Response, cap: usize) -> Result<Vec<u8>, AttemptError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(network)? {
        if out.len() + chunk.len() > cap {
            let room = cap.saturating_sub(out.len());
            out.extend_from_slice(chunk.get(..room).unwrap_or_default());
            if cap == MAX_BODY_BYTES {
                return Err(AttemptError::Invalid("answer too large".into()));
            }
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Provider text for `detail`: the key masked should a provider echo it, cut to a few hundred characters.
fn redact(text: &str, key: &str) -> String {
    let text = if key.len() >= 4 {
        text.replace(key, "***")
    } else {
        text.to_string()
    };
    truncate(text.trim(), DETAIL_MAX_CHARS)
}

pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or_default()),
        None => s.to_string(),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Tool arguments text → JSON: empty is `{}`, text that is not JSON is kept as a JSON string.
pub(crate) fn arguments_from_text(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// The id of a tool call whose provider gave none (Gemini; some OpenAI-compatible servers): results are
/// matched back by it.
pub(crate) fn call_id_or_new(id: Option<&str>) -> String {
    match id {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("call_{}", uuid::Uuid::new_v4().simple()),
    }
}

/// A `u64` from an optional JSON number (usage fields are often absent or null).
pub(crate) fn count(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_text_round_trips() {
        for p in [Provider::OpenAi, Provider::Anthropic, Provider::Gemini] {
            assert_eq!(p.as_str().parse::<Provider>().unwrap(), p);
        }
        assert!("vertex".parse::<Provider>().is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug_and_details() {
        let c = Credential {
            api_key: zeroize::Zeroizing::new("sk-secret-value".into()),
            base_url: Some("http://x".into()),
        };
        assert!(!format!("{c:?}").contains("sk-secret"));
        let req = ChatRequest {
            provider: Provider::OpenAi,
            model: "m".into(),
            credential: c,
            messages: vec![],
            tools: vec![],
            max_output_tokens: None,
            deadline: Instant::now(),
        };
        assert!(!format!("{req:?}").contains("sk-secret"));
        let d = redact(
            &format!("bad key sk-secret-value {}", "x".repeat(1000)),
            "sk-secret-value",
        );
        assert!(!d.contains("sk-secret"));
        assert!(d.chars().count() <= DETAIL_MAX_CHARS + 1);
        let e = InferenceError::new("OPENAI_REQUEST_FAILED:401", false, "detail");
        assert_eq!(e.to_string(), "OPENAI_REQUEST_FAILED:401");
    }

    #[test]
    fn arguments_text() {
        assert_eq!(arguments_from_text(""), serde_json::json!({}));
        assert_eq!(arguments_from_text("{\"a\":1}"), serde_json::json!({"a":1}));
        assert_eq!(arguments_from_text("{oops"), serde_json::json!("{oops"));
    }
}
