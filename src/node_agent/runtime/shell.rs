//! `agent.execute`: a workflow node's shell task, run in a sandbox (spec gateway §3.4-3.6, with its
//! Improve lines: the node may only tighten the gateway's timeout and network policy), on a private
//! copy of the call's workspace when it has one.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::failure::{Failed, Failure};
use super::payload::{ExecutePayload, ShellTask};
use super::workspace::{self, Budget, Checkout, Finished};
use super::{workdir, RuntimeContext};
use crate::domain::gateway::protocol::{InvokeToolV2, ToolPolicy};
use crate::node_agent::sandbox::docker::DockerSandbox;
use crate::node_agent::sandbox::provider::{
    ProviderError, ProviderResult, ProviderSandbox, ProviderTask,
};
use crate::node_agent::sandbox::{BackendKind, NetworkMode, Outcome, Sandbox, SandboxError, Task};

pub(super) async fn run(invoke: &InvokeToolV2, ctx: &RuntimeContext, budget: &Budget) -> Finished {
    let without = Finished::without_workspace;
    // Checked before anything else, payload and workspace included: a shell task never sees a
    // credential.
    if invoke.secret.is_some() {
        return without(Err(Failure::SecretNotAllowedForShell.into()));
    }
    let payload = match ExecutePayload::parse(&invoke.payload) {
        Ok(payload) => payload,
        Err(failure) => return without(Err(failure.into())),
    };
    // Where the task would run is settled before the workspace is fetched: a task that cannot run
    // here should not cost a download first.
    let planned = match payload
        .task()
        .map(|task| plan(invoke, ctx, &payload).map(|p| (task, p)))
    {
        None => None,
        Some(Ok(planned)) => Some(planned),
        Some(Err(failure)) => return without(Err(failure.into())),
    };
    let checkout = match workspace::checkout(invoke, ctx, budget).await {
        Ok(checkout) => checkout,
        Err(failure) => return without(Err(failure.into())),
    };
    match (planned, checkout) {
        // No task: acknowledged, and the version passed on unchanged (spec §3.4).
        (None, checkout) => {
            let accepted = Ok(json!({ "accepted": true }));
            workspace::finish(checkout.as_ref(), None, accepted, ctx, budget).await
        }
        // An older gateway's call: the task runs in its per-run workdir, which stays.
        (Some((task, plan)), None) => {
            without(match workdir::prepare(&ctx.workdir_root, &plan.dir) {
                Ok(dir) => launch(invoke, &payload, task, &plan, dir).await,
                Err(failure) => Err(failure.into()),
            })
        }
        (Some((task, plan)), Some(checkout)) => {
            run_in_workspace(invoke, ctx, &payload, task, &plan, &checkout, budget).await
        }
    }
}

/// The task runs in a private copy of the workspace version at its per-run workdir, and whatever it
/// leaves there becomes the next version, whether it succeeded or not. If the copy cannot be made the
/// task does not run and no version is produced (the gateway releases the workspace either way).
async fn run_in_workspace(
    invoke: &InvokeToolV2,
    ctx: &RuntimeContext,
    payload: &ExecutePayload,
    task: &ShellTask,
    plan: &Plan<'_>,
    checkout: &Checkout,
    budget: &Budget,
) -> Finished {
    let claim = ctx.workspaces.claim(plan.dir.clone());
    let dir = match workdir::prepare(&ctx.workdir_root, claim.path()) {
        Ok(dir) => dir,
        Err(failure) => return Finished::without_workspace(Err(failure.into())),
    };
    let finished = match checkout.materialize(&dir).await {
        Ok(()) => {
            let done = launch(invoke, payload, task, plan, dir.clone()).await;
            workspace::finish(Some(checkout), Some(&dir), done, ctx, budget).await
        }
        Err(failure) => Finished::without_workspace(Err(failure.into())),
    };
    // The tree is uploaded and cached (or lost with a failed call): the workdir is scratch now.
    workspace::discard(&dir).await;
    drop(claim);
    finished
}

/// Where and how the task would run, before anything touches the disk.
struct Plan<'a> {
    backend: BackendKind,
    runner: Runner<'a>,
    /// The per-run workdir (not yet created).
    dir: PathBuf,
}

/// The backend that takes the task.
enum Runner<'a> {
    Host(&'a dyn Sandbox),
    /// The Docker backend itself (a node may name its image).
    Docker(&'a DockerSandbox),
    Provider(&'a ProviderSandbox),
}

fn plan<'a>(
    invoke: &InvokeToolV2,
    ctx: &'a RuntimeContext,
    payload: &ExecutePayload,
) -> Result<Plan<'a>, Failure> {
    let spec = payload.sandbox();
    let backend = choose_backend(ctx.default_backend, spec.and_then(|s| s.backend))?;
    let runner = runner_for(ctx, backend)?;
    let dir = workdir::path(
        &ctx.workdir_root,
        invoke.organization_id,
        payload.run_id,
        &payload.node_id,
        payload.attempt_count,
    )?;
    Ok(Plan {
        backend,
        runner,
        dir,
    })
}

async fn launch(
    invoke: &InvokeToolV2,
    payload: &ExecutePayload,
    task: &ShellTask,
    plan: &Plan<'_>,
    workdir: PathBuf,
) -> Result<Value, Failed> {
    let spec = payload.sandbox();
    let policy = &invoke.tool_policy;
    let image = spec
        .and_then(|s| s.docker.as_ref())
        .and_then(|d| d.image.as_deref());
    let task = Task {
        script: task.script.clone(),
        shell: task.shell.unwrap_or_default(),
        env: task.env.clone().unwrap_or_default(),
        workdir,
        timeout: timeout(policy, spec.and_then(|s| s.timeout_ms)),
        network: network(policy, spec.and_then(|s| s.network)),
        output_max_bytes: usize::try_from(policy.output_max_chars).unwrap_or(usize::MAX),
    };
    tracing::info!(
        request_id = %invoke.request_id,
        run_id = ?payload.run_id,
        workflow_id = ?payload.workflow_id,
        node_id = %payload.node_id,
        backend = ?plan.backend,
        network = ?task.network,
        timeout_ms = task.timeout.as_millis(),
        "running a shell task"
    );
    let ran = match plan.runner {
        Runner::Docker(docker) => docker.run_with_image(task, image).await,
        Runner::Host(host) => host.run(task).await,
        Runner::Provider(provider) => {
            return run_on_provider(provider, invoke, payload, &task, image).await
        }
    };
    match ran {
        Ok(outcome) => result_of(outcome),
        Err(SandboxError::NetworkModeUnsupported) => {
            Err(Failure::HostNetworkModeUnsupported.into())
        }
        Err(SandboxError::Failed(why)) if plan.backend == BackendKind::Docker => {
            tracing::warn!(request_id = %invoke.request_id, error = %why, "docker sandbox failed");
            Err(Failure::DockerFailed.into())
        }
        Err(SandboxError::Failed(why)) => Err(Failure::ExecutionFailedWith(why).into()),
    }
}

/// The provider answers with the result itself: its success and output, or its error code.
async fn run_on_provider(
    provider: &ProviderSandbox,
    invoke: &InvokeToolV2,
    payload: &ExecutePayload,
    task: &Task,
    image: Option<&str>,
) -> Result<Value, Failed> {
    let context = ProviderTask {
        request_id: &invoke.request_id,
        organization_id: invoke.organization_id,
        user_id: invoke.user_id,
        run_id: payload.run_id,
        workflow_id: payload.workflow_id,
        node_id: &payload.node_id,
        attempt_count: payload.attempt_count,
        script: &task.script,
        shell: task.shell.into(),
        task_env: &task.env,
        backend: "provider",
        network_mode: task.network.into(),
        timeout_ms: u64::try_from(task.timeout.as_millis()).unwrap_or(u64::MAX),
        docker_image: image,
        env_passthrough_allowlist: [],
        workdir_host_path: &task.workdir,
        output_max_bytes: task.output_max_bytes,
    };
    match provider.run(&context).await {
        Ok(ProviderResult::Succeeded { output }) => Ok(output),
        Ok(ProviderResult::Failed { error, output }) => Err(Failed {
            failure: Failure::Provider(error),
            output,
        }),
        Err(e) => {
            tracing::warn!(request_id = %invoke.request_id, error = %e, "sandbox provider failed");
            Err(match e {
                ProviderError::LoadFailed(_) => Failure::SandboxProviderLoadFailed,
                ProviderError::Invalid(_) => Failure::SandboxProviderInvalid,
                ProviderError::TimedOut => Failure::Timeout,
            }
            .into())
        }
    }
}

/// The node's `sandbox.backend` may pick any backend but the host: running tasks unconfined on this
/// machine is the operator's decision alone (`--exec-backend host`), never a workflow author's.
fn choose_backend(
    default: BackendKind,
    requested: Option<BackendKind>,
) -> Result<BackendKind, Failure> {
    let chosen = requested.unwrap_or(default);
    if chosen == BackendKind::Host && default != BackendKind::Host {
        return Err(Failure::HostBackendNotEnabled);
    }
    Ok(chosen)
}

fn runner_for(ctx: &RuntimeContext, backend: BackendKind) -> Result<Runner<'_>, Failure> {
    match backend {
        BackendKind::Host => Ok(Runner::Host(ctx.host.as_ref())),
        BackendKind::Docker => match ctx.docker.as_deref() {
            Some(d) => Ok(Runner::Docker(d)),
            None => {
                tracing::warn!(
                    "a task needs the docker backend, but no Docker engine answered when this agent \
                     started; start Docker (or the agent with --exec-backend host)"
                );
                Err(Failure::DockerFailed)
            }
        },
        BackendKind::Provider => ctx
            .provider
            .as_ref()
            .map(Runner::Provider)
            .ok_or(Failure::SandboxProviderNotConfigured),
    }
}

/// The gateway's limit, shortened by the node's own if that is smaller.
fn timeout(policy: &ToolPolicy, node_ms: Option<u64>) -> Duration {
    let ms = node_ms.map_or(policy.timeout_ms, |n| n.min(policy.timeout_ms));
    Duration::from_millis(ms)
}

/// The stricter of the gateway's policy and the node's setting. A policy value this agent does not
/// know means no network: failing closed is the safe reading of a policy.
fn network(policy: &ToolPolicy, node: Option<NetworkMode>) -> NetworkMode {
    let policy_mode = match policy.network_mode.as_str() {
        "enabled" => NetworkMode::Enabled,
        _ => NetworkMode::None,
    };
    node.map_or(policy_mode, |n| n.stricter(policy_mode))
}

/// Spec §3.6: the outcome object is the output, whatever happened.
fn result_of(outcome: Outcome) -> Result<Value, Failed> {
    let output = serde_json::to_value(&outcome)
        .map_err(|e| Failure::ExecutionFailedWith(format!("output: {e}")))?;
    let failure = if outcome.timed_out {
        Failure::Timeout
    } else {
        match (outcome.exit_code, outcome.backend) {
            (Some(0), _) => return Ok(output),
            (Some(code), "docker") => Failure::DockerExitCode(code),
            (Some(code), _) => Failure::HostExitCode(code),
            (None, _) => Failure::ExecutionFailed,
        }
    };
    Err(Failed {
        failure,
        output: Some(output),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_operator_enables_the_host_backend() {
        use BackendKind::*;
        assert_eq!(choose_backend(Docker, None), Ok(Docker));
        assert_eq!(choose_backend(Docker, Some(Provider)), Ok(Provider));
        assert_eq!(
            choose_backend(Docker, Some(Host)),
            Err(Failure::HostBackendNotEnabled)
        );
        assert_eq!(
            choose_backend(Provider, Some(Host)),
            Err(Failure::HostBackendNotEnabled)
        );
        assert_eq!(choose_backend(Host, None), Ok(Host));
        assert_eq!(choose_backend(Host, Some(Docker)), Ok(Docker));
    }

    #[test]
    fn the_node_only_tightens_the_policy() {
        let mut policy = ToolPolicy::default_deny(30_000, 1024);
        assert_eq!(timeout(&policy, None), Duration::from_secs(30));
        assert_eq!(timeout(&policy, Some(5_000)), Duration::from_secs(5));
        assert_eq!(timeout(&policy, Some(60_000)), Duration::from_secs(30));
        assert_eq!(
            network(&policy, Some(NetworkMode::Enabled)),
            NetworkMode::None
        );
        policy.network_mode = "enabled".into();
        assert_eq!(network(&policy, None), NetworkMode::Enabled);
        assert_eq!(network(&policy, Some(NetworkMode::None)), NetworkMode::None);
        policy.network_mode = "bridge".into();
        assert_eq!(network(&policy, None), NetworkMode::None);
    }
}
