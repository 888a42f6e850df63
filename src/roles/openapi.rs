//! The OpenAPI 3.1 document of the api role (`GET /v1/openapi.json`). It is generated from the code: each
//! handler's `#[utoipa::path]` in its domain's `routes.rs` (path, parameters, body, success and the route's
//! own errors), the wire types' `ToSchema` derives, and then completed here from the access table
//! (`policy::ROUTES`): credentials, `X-Org-Id`, and the error responses every route of a kind can give.
//! It lives with the roles because, like `api::routes`, it names every domain's routes; the parts that
//! know no domain (error responses, serving) are in `platform::http::openapi`.
//!
//! Adding a route (the completeness test, `tests/it/openapi.rs`, fails until this is done):
//! 1. give its handler a `#[utoipa::path(<method>, path = "<template exactly as registered>",
//!    operation_id = "<unique>", tag = "<group>", params(...), request_body = ..., responses(...))]`,
//!    listing the success answer and the errors only this route gives (`response = NotFound`, …);
//! 2. name the handler in `paths(...)` of [`ApiDoc`] below, or, when one handler serves several
//!    templates, add the other templates to [`ALIASES`];
//! 3. give it its line in `policy::ROUTES`, from which 401/403, `X-Org-Id` and the security
//!    requirement are added; 400/413/415 follow from a JSON body, 500 and 503 from [`complete`].
//!
//! A stream answers its own media type: `responses((status = 200, content_type = "text/event-stream",
//! body = String, description = "…"))` (for `…/runs/{runId}/events/stream`). A route served on another
//! listener (the gateway's; `/metrics` if it gets its own port) is not part of this document.

use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Ref, RefOr, Required};
use utoipa::{OpenApi, PartialSchema, ToResponse, ToSchema};

use crate::domain::common::access::Role;
use crate::domain::common::policy::{self, Access};
use crate::domain::{
    agents, apikeys, audit, auth, meta, orgs, runs, secrets, sessions, triggers, usage, workflows,
};
use crate::platform::http::error::Envelope;
use crate::platform::http::openapi::{
    self as http_openapi, error_responses, BadRequest, Forbidden, InternalError, PayloadTooLarge,
    ServiceUnavailable, Unauthorized, UnsupportedMediaType,
};
use crate::roles::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Vespid API",
        description = "The HTTP API of Vespid, a self-hostable multi-tenant automation platform.\n\n\
            Sign in (`POST /v1/auth/login`) for an access token and send it as `Authorization: Bearer <token>`; \
            the refresh cookie also authenticates. Routes under `/v1/orgs/{orgId}` also need the header \
            `X-Org-Id: <orgId>` and a membership of that org. Every error answers the envelope \
            `{code, message, details?}` (schema `Error`); `code` is stable, `message` is for people.",
        license(name = "AGPL-3.0-only", identifier = "AGPL-3.0-only"),
    ),
    paths(
        api::healthz,
        api::readyz,
        http_openapi::openapi_json,
        http_openapi::docs,
        meta::routes::capabilities,
        meta::routes::connectors,
        auth::routes::signup,
        auth::routes::login,
        auth::routes::refresh,
        auth::routes::logout,
        auth::routes::logout_all,
        auth::routes::me,
        orgs::routes::create_org,
        orgs::routes::invite,
        orgs::routes::change_role,
        orgs::routes::get_settings,
        orgs::routes::put_settings,
        orgs::routes::credits,
        orgs::routes::accept,
        secrets::routes::list,
        secrets::routes::create,
        secrets::routes::update,
        secrets::routes::remove,
        workflows::routes::create,
        workflows::routes::list,
        workflows::routes::get,
        workflows::routes::update,
        workflows::routes::publish,
        workflows::routes::clone_draft,
        workflows::routes::revisions,
        runs::routes::create,
        runs::routes::list,
        runs::routes::get,
        runs::routes::events,
        agents::routes::list,
        agents::routes::issue_pairing_token,
        agents::routes::revoke,
        agents::routes::set_labels,
        agents::routes::set_tags,
        agents::routes::pair,
        triggers::routes::deliver,
        runs::routes::stream,
        apikeys::routes::create,
        apikeys::routes::list,
        apikeys::routes::revoke,
        audit::routes::list,
        usage::routes::report,
        sessions::routes::create,
        sessions::routes::list,
        sessions::routes::get,
        sessions::routes::events,
    ),
    tags(
        (name = "auth", description = "Accounts, sessions and sign-in"),
        (name = "orgs", description = "Organizations, members, invitations and settings"),
        (name = "secrets", description = "Connector secrets (values go in, never out)"),
        (name = "workflows", description = "Workflow drafts, publishing and revisions"),
        (name = "runs", description = "Runs of published workflows and their events"),
        (name = "executors", description = "Node agents (executors): pairing and management; `agents` and `executors` name the same routes"),
        (name = "webhooks", description = "Webhook triggers"),
        (name = "api-keys", description = "Org-scoped API keys for REST clients"),
        (name = "audit", description = "The org's audit log"),
        (name = "usage", description = "LLM usage, cost and the monthly token budget"),
        (name = "sessions", description = "Interactive agent sessions and their events (live over the gateway's `/ws/client`)"),
        (name = "meta", description = "Health, capabilities and this document"),
    )
)]
struct ApiDoc;

/// The OAuth routes exist only with the `oidc` feature.
#[cfg(feature = "oidc")]
#[derive(OpenApi)]
#[openapi(paths(auth::oauth::routes::start, auth::oauth::routes::callback))]
struct OAuthDoc;

/// A template served by a handler already described under another one.
struct Alias {
    path: &'static str,
    of: &'static str,
    /// Path parameters named differently in the alias: (in `of`, in `path`).
    renamed: &'static [(&'static str, &'static str)],
}

/// `…/executors…` and `…/agents…` name the same executor routes.
const ALIASES: &[Alias] = &[
    Alias {
        path: "/v1/orgs/{orgId}/executors",
        of: "/v1/orgs/{orgId}/agents",
        renamed: &[],
    },
    Alias {
        path: "/v1/orgs/{orgId}/executors/pairing-tokens",
        of: "/v1/orgs/{orgId}/agents/pairing-tokens",
        renamed: &[],
    },
    Alias {
        path: "/v1/orgs/{orgId}/executors/{executorId}/revoke",
        of: "/v1/orgs/{orgId}/agents/{agentId}/revoke",
        renamed: &[("agentId", "executorId")],
    },
    Alias {
        path: "/v1/executors/pair",
        of: "/v1/agents/pair",
        renamed: &[],
    },
];

/// Routes answered from memory: no PostgreSQL or Redis behind them, so no 503 (`/readyz` says its own).
const IN_MEMORY: &[&str] = &[
    "/healthz",
    "/readyz",
    "/v1/openapi.json",
    "/docs",
    "/v1/meta/capabilities",
    "/v1/meta/connectors",
];

const BEARER: &str = "bearerAuth";
const COOKIE: &str = "sessionCookie";

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    #[cfg(feature = "oidc")]
    doc.merge(OAuthDoc::openapi());
    add_aliases(&mut doc);
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert(Envelope::name().into_owned(), Envelope::schema());
    for (name, response) in error_responses() {
        components.responses.insert(name.to_string(), response);
    }
    add_security_schemes(components);
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in operations(item) {
            complete(path, method, op);
        }
    }
    doc
}

fn add_aliases(doc: &mut utoipa::openapi::OpenApi) {
    for alias in ALIASES {
        let Some(mut item) = doc.paths.paths.get(alias.of).cloned() else {
            continue;
        };
        for (_, op) in operations(&mut item) {
            if let Some(id) = &mut op.operation_id {
                id.push_str("ViaExecutors");
            }
            for p in op.parameters.iter_mut().flatten() {
                if let Some((_, to)) = alias.renamed.iter().find(|(from, _)| p.name == *from) {
                    p.name = (*to).to_string();
                }
            }
            let note = format!("Alias of `{}`.", alias.of);
            op.description = Some(match op.description.take() {
                Some(d) => format!("{d}\n\n{note}"),
                None => note,
            });
        }
        doc.paths.paths.insert(alias.path.to_string(), item);
    }
}

fn add_security_schemes(components: &mut utoipa::openapi::Components) {
    let mut bearer = Http::new(HttpAuthScheme::Bearer);
    bearer.bearer_format = Some("JWT".into());
    bearer.description =
        Some("The access token of a session (`session.token` of login or signup)".into());
    let schemes = [
        (BEARER, SecurityScheme::Http(bearer)),
        (
            COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "vespid_session",
                "The refresh cookie (`SESSION_COOKIE_NAME`); a fresh access token comes back in `x-access-token`",
            ))),
        ),
        (
            "webhookSignature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Vespid-Signature",
                "`t=<unix seconds>,v1=<hex HMAC-SHA256(token, \"<t>.<raw body>\")>`; within 5 minutes, accepted once",
            ))),
        ),
        (
            "webhookToken",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Vespid-Webhook-Token",
                "The trigger's token itself, for simple clients (no replay protection)",
            ))),
        ),
    ];
    for (name, scheme) in schemes {
        components.security_schemes.insert(name.to_string(), scheme);
    }
}

/// The operations of a path item, with their HTTP methods.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("GET", &mut item.get),
        ("PUT", &mut item.put),
        ("POST", &mut item.post),
        ("DELETE", &mut item.delete),
        ("PATCH", &mut item.patch),
        ("HEAD", &mut item.head),
        ("OPTIONS", &mut item.options),
        ("TRACE", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
}

fn response_ref<'r, R: ToResponse<'r>>() -> RefOr<utoipa::openapi::Response> {
    RefOr::Ref(Ref::from_response_name(R::response().0))
}

/// What every route of a kind shares, added where the handler's annotation did not say it already.
fn complete(path: &str, method: &str, op: &mut Operation) {
    let access = policy::rule_for(method, path).map_or(Access::Public, |r| r.access);
    let mut add = |status: &str, response: RefOr<utoipa::openapi::Response>| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert(response);
    };
    if access != Access::Public {
        add("401", response_ref::<Unauthorized>());
    }
    if let Some(role) = access.min_role() {
        add("400", response_ref::<BadRequest>());
        add("403", response_ref::<Forbidden>());
        let who = if role == Role::Member {
            "any member"
        } else {
            "an owner or admin"
        };
        let note = format!("Needs `X-Org-Id` and {who} of the organization.");
        op.description = Some(match op.description.take() {
            Some(d) => format!("{d}\n\n{note}"),
            None => note,
        });
    }
    let json_body = op
        .request_body
        .as_ref()
        .is_some_and(|b| b.content.contains_key("application/json"));
    if json_body {
        add("400", response_ref::<BadRequest>());
        add("413", response_ref::<PayloadTooLarge>());
        add("415", response_ref::<UnsupportedMediaType>());
    }
    if !IN_MEMORY.contains(&path) {
        add("503", response_ref::<ServiceUnavailable>());
    }
    add("500", response_ref::<InternalError>());
    if access != Access::Public && op.security.is_none() {
        op.security = Some(vec![
            SecurityRequirement::new(BEARER, Vec::<String>::new()),
            SecurityRequirement::new(COOKIE, Vec::<String>::new()),
        ]);
    }
    if access.min_role().is_some() {
        let params = op.parameters.get_or_insert_with(Vec::new);
        if !params
            .iter()
            .any(|p| p.name.eq_ignore_ascii_case("x-org-id"))
        {
            params.push(
                ParameterBuilder::new()
                    .name("X-Org-Id")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::True)
                    .description(Some("The organization of the path (`{orgId}`)"))
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                    ))
                    .build(),
            );
        }
    }
}
