//! The gateway's Redis names shared with the continuation (gateway spec 2.3, 2.6): final dispatch
//! results, executor replies, in-flight dispatch markers, and the continuation's push list.

/// A dispatch's final result (`{status, output?, error?}`, kept `results_ttl_secs`).
pub fn result_key(request_id: &str) -> String {
    format!("gateway:results:{request_id}")
}

/// An executor's reply to one tool call.
pub fn reply_key(invoke_id: &str) -> String {
    format!("gateway:bus:reply:{invoke_id}")
}

/// Present while a dispatch runs somewhere (so it is neither sent twice nor taken for never sent).
pub fn inflight_key(request_id: &str) -> String {
    format!("gateway:inflight:{request_id}")
}

/// Which executor a tool call was sent to: only its result is accepted.
pub fn pending_key(invoke_id: &str) -> String {
    format!("gateway:pending:{invoke_id}")
}

/// Where finished asynchronous dispatches are pushed for the continuation (`remote.apply` messages).
pub const CONTINUATIONS: &str = "workflow-continuations";

/// Channel telling every instance that a reply landed (the message is the tool call's id).
pub const REPLIES_CHANNEL: &str = "gateway:replies";

/// Channel of one instance: tool calls for executors connected to it.
pub fn edge_channel(edge_id: &str) -> String {
    format!("gateway:edge:{edge_id}")
}
