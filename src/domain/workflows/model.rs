//! Workflow rows as stored (one row per revision of a family) and as shown on the wire.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::domain::common::ids::{OrgId, UserId, WorkflowId};
use crate::domain::common::time::iso;
use crate::platform::db::schema::workflows;

crate::text_enum! {
    /// A revision is edited as a draft; once published it is immutable and runnable.
    pub enum WorkflowStatus {
        Draft = "draft",
        Published = "published",
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = workflows)]
pub struct WorkflowRow {
    pub id: WorkflowId,
    pub organization_id: OrgId,
    pub family_id: WorkflowId,
    pub revision: i32,
    pub source_workflow_id: Option<WorkflowId>,
    pub name: String,
    pub status: WorkflowStatus,
    pub version: i32,
    /// The normalised DSL (`workflows.dsl`; renamed because `dsl` clashes with diesel's module).
    pub dsl_doc: Value,
    pub editor_state: Option<Value>,
    pub created_by_user_id: UserId,
    pub published_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WorkflowRow {
    pub fn is_draft(&self) -> bool {
        self.status == WorkflowStatus::Draft
    }

    pub fn is_published(&self) -> bool {
        self.status == WorkflowStatus::Published
    }

    /// The `workflow` object (spec 2.2); `editorState` is always present (Improve).
    pub fn view(&self) -> WorkflowView {
        WorkflowView {
            id: self.id,
            organization_id: self.organization_id,
            family_id: self.family_id,
            revision: self.revision,
            source_workflow_id: self.source_workflow_id,
            name: self.name.clone(),
            status: self.status,
            version: self.version,
            dsl: self.dsl_doc.clone(),
            editor_state: self.editor_state.clone().unwrap_or(Value::Null),
            created_by_user_id: self.created_by_user_id,
            published_at: self.published_at.map(iso),
            created_at: iso(self.created_at),
            updated_at: iso(self.updated_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Workflow)]
pub struct WorkflowView {
    pub id: WorkflowId,
    pub organization_id: OrgId,
    pub family_id: WorkflowId,
    pub revision: i32,
    pub source_workflow_id: Option<WorkflowId>,
    pub name: String,
    pub status: WorkflowStatus,
    pub version: i32,
    pub dsl: Value,
    pub editor_state: Value,
    pub created_by_user_id: UserId,
    pub published_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A new row: revision 1 of a new family, or the next draft revision cloned from a published row.
#[derive(Debug, Insertable)]
#[diesel(table_name = workflows)]
pub struct NewWorkflow<'a> {
    pub id: WorkflowId,
    pub organization_id: OrgId,
    pub family_id: WorkflowId,
    pub revision: i32,
    pub source_workflow_id: Option<WorkflowId>,
    pub name: &'a str,
    pub status: WorkflowStatus,
    pub version: i32,
    pub dsl_doc: &'a Value,
    pub editor_state: Option<&'a Value>,
    pub created_by_user_id: UserId,
}

/// The fields a draft update may change; `None` leaves a field as it is. `editor_state: Some(None)` clears it.
#[derive(Debug, Default)]
pub struct DraftChanges {
    pub name: Option<String>,
    pub dsl: Option<Value>,
    pub editor_state: Option<Option<Value>>,
}
