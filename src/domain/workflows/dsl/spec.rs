//! The typed form of each node's config, read once from the normalised JSON the parser produced (so it is
//! already valid: a failure here is a parser bug, reported as an invalid document). Executors take these
//! structs and never look at JSON again.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use uuid::Uuid;

crate::text_enum! {
    /// The node types of the DSL (spec 1.4).
    pub enum NodeType {
        HttpRequest = "http.request",
        AgentRun = "agent.run",
        AgentExecute = "agent.execute",
        ConnectorAction = "connector.action",
        GithubIssueCreate = "connector.github.issue.create",
        Condition = "condition",
        ParallelJoin = "parallel.join",
    }
}

crate::text_enum! {
    pub enum HttpMethod {
        Get = "GET",
        Post = "POST",
        Put = "PUT",
        Patch = "PATCH",
        Delete = "DELETE",
        Head = "HEAD",
        Options = "OPTIONS",
    }
}

crate::text_enum! {
    /// Where a node that may run remotely runs.
    pub enum ExecutionMode {
        Cloud = "cloud",
        Executor = "executor",
    }
}

crate::text_enum! {
    pub enum ConditionOp {
        Eq = "eq",
        Neq = "neq",
        Contains = "contains",
        Exists = "exists",
        Gt = "gt",
        Gte = "gte",
        Lt = "lt",
        Lte = "lte",
    }
}

/// A present JSON `null` stays `Some(Null)`: for `value`, `body` and `input` a missing key (JS
/// `undefined`) and `null` mean different things.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// One node's typed config.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeSpec {
    /// `None`: the v2 stub (no config).
    HttpRequest(Option<HttpRequest>),
    AgentRun(Box<AgentRun>),
    /// `None`: the cloud stub (no config).
    AgentExecute(Option<AgentExecute>),
    ConnectorAction(ConnectorAction),
    GithubIssueCreate(GithubIssue),
    /// `None`: no config (evaluates to `INVALID_CONDITION_CONFIG`, as in the original).
    Condition(Option<Condition>),
    ParallelJoin(Join),
}

impl NodeSpec {
    pub fn node_type(&self) -> NodeType {
        match self {
            NodeSpec::HttpRequest(_) => NodeType::HttpRequest,
            NodeSpec::AgentRun(_) => NodeType::AgentRun,
            NodeSpec::AgentExecute(_) => NodeType::AgentExecute,
            NodeSpec::ConnectorAction(_) => NodeType::ConnectorAction,
            NodeSpec::GithubIssueCreate(_) => NodeType::GithubIssueCreate,
            NodeSpec::Condition(_) => NodeType::Condition,
            NodeSpec::ParallelJoin(_) => NodeType::ParallelJoin,
        }
    }

    /// Reads the typed config of a `node_type` node from its normalised `config`.
    pub fn read(node_type: NodeType, config: Option<&Value>) -> Result<Self, String> {
        fn typed<T: for<'de> Deserialize<'de>>(config: Option<&Value>) -> Result<T, String> {
            let value = config.ok_or("config is required")?;
            T::deserialize(value).map_err(|e| e.to_string())
        }
        fn optional<T: for<'de> Deserialize<'de>>(
            config: Option<&Value>,
        ) -> Result<Option<T>, String> {
            config
                .map(|v| T::deserialize(v).map_err(|e| e.to_string()))
                .transpose()
        }
        Ok(match node_type {
            NodeType::HttpRequest => NodeSpec::HttpRequest(optional(config)?),
            NodeType::AgentRun => NodeSpec::AgentRun(Box::new(typed(config)?)),
            NodeType::AgentExecute => NodeSpec::AgentExecute(optional(config)?),
            NodeType::ConnectorAction => NodeSpec::ConnectorAction(typed(config)?),
            NodeType::GithubIssueCreate => NodeSpec::GithubIssueCreate(typed(config)?),
            NodeType::Condition => NodeSpec::Condition(optional(config)?),
            NodeType::ParallelJoin => NodeSpec::ParallelJoin(typed(config)?),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequest {
    pub method: HttpMethod,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "present")]
    pub body: Option<Value>,
    /// Ours (Decisions): a non-2xx status fails the node unless this is false.
    #[serde(default = "yes")]
    pub fail_on_status: bool,
}

fn yes() -> bool {
    true
}

/// Which executor may take a remote node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    pub pool: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    pub group: Option<String>,
    pub tag: Option<String>,
    pub executor_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    pub mode: ExecutionMode,
    pub selector: Option<Selector>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentExecute {
    pub execution: Option<Execution>,
    pub task: Option<ShellTask>,
    pub sandbox: Option<Sandbox>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShellTask {
    pub script: String,
    pub shell: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    pub backend: Option<String>,
    pub network: Option<String>,
    pub timeout_ms: Option<u64>,
    pub docker: Option<DockerSandbox>,
    #[serde(default)]
    pub env_passthrough_allowlist: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DockerSandbox {
    pub image: Option<String>,
}

/// `auth: {secretId}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretAuth {
    pub secret_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorAction {
    pub connector_id: String,
    pub action_id: String,
    /// The action's own input, validated by the action when it runs.
    #[serde(default, deserialize_with = "present")]
    pub input: Option<Value>,
    pub auth: SecretAuth,
    pub execution: Option<Execution>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GithubIssue {
    pub repo: String,
    pub title: String,
    pub body: Option<String>,
    pub auth: SecretAuth,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Condition {
    pub path: String,
    pub op: ConditionOp,
    #[serde(default, deserialize_with = "present")]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Join {
    pub mode: String,
    pub fail_fast: bool,
}

/// `agent.run` (spec 1.4): run by the gateway brain. The parts the brain reads are typed; the team and
/// per-connector auth defaults stay JSON until the brain uses them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRun {
    pub toolset_id: Option<Uuid>,
    pub llm: Llm,
    pub execution: AgentExecution,
    pub engine: Option<Engine>,
    pub prompt: Prompt,
    pub tools: Tools,
    pub limits: Limits,
    pub output: Output,
    pub team: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Llm {
    pub provider: String,
    pub model: String,
    pub auth: LlmAuth,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmAuth {
    pub secret_id: Option<Uuid>,
    pub fallback_to_env: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentExecution {
    pub mode: String,
    pub selector: Option<Selector>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Engine {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Prompt {
    pub system: Option<String>,
    pub instructions: String,
    pub input_template: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tools {
    pub allow: Vec<String>,
    pub execution: ExecutionMode,
    pub auth_defaults: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_turns: u32,
    pub max_tool_calls: u32,
    pub timeout_ms: u64,
    pub max_output_chars: u64,
    pub max_runtime_chars: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    pub mode: String,
    pub json_schema: Option<Value>,
}
