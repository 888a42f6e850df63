//! Typed ids: a `RunId` cannot be passed where an `OrgId` is expected. Each is a UUID on the wire
//! (serde transparent; a `uuid` string in the OpenAPI document) and in PostgreSQL (diesel newtype).

use diesel_derive_newtype::DieselNewType;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident),+ $(,)?) => {$(
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, DieselNewType,
        )]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub const fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        /// A UUID string in the API description.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Uuid,
                    )))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    )+};
}

id_type! {
    /// A user account.
    UserId,
    /// An organization (the tenant).
    OrgId,
    /// A login session (refresh-token family).
    SessionId,
    /// A user's membership of an org.
    MembershipId,
    /// An org invitation.
    InvitationId,
    /// A connector secret.
    SecretId,
    /// A workflow revision (a family is named by the id of its first revision).
    WorkflowId,
    /// A workflow run.
    RunId,
    /// A run event.
    EventId,
    /// An org's paired executor (node agent).
    ExecutorId,
    /// An org's API key.
    ApiKeyId,
    /// An interactive agent session (not a login session: that is [`SessionId`]).
    AgentSessionId,
    /// An event of an agent session.
    SessionEventId,
}

impl RunId {
    /// Time-ordered (UUIDv7): new runs land at the right edge of the primary key.
    pub fn time_ordered() -> Self {
        Self(Uuid::now_v7())
    }
}
