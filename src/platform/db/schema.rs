//! Diesel table definitions, written to match `migrations/` (the migrations are authoritative).

diesel::table! {
    roles (key) {
        key -> Text,
        name -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        email -> Text,
        password_hash -> Text,
        display_name -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    organizations (id) {
        id -> Uuid,
        slug -> Text,
        name -> Text,
        settings -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    memberships (id) {
        id -> Uuid,
        organization_id -> Uuid,
        user_id -> Uuid,
        role_key -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    organization_invitations (id) {
        id -> Uuid,
        organization_id -> Uuid,
        email -> Text,
        role_key -> Text,
        invited_by_user_id -> Uuid,
        token -> Text,
        status -> Text,
        expires_at -> Timestamptz,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    auth_sessions (id) {
        id -> Uuid,
        user_id -> Uuid,
        refresh_token_hash -> Text,
        expires_at -> Timestamptz,
        absolute_expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        user_agent -> Nullable<Text>,
        ip -> Nullable<Text>,
        created_at -> Timestamptz,
        last_used_at -> Timestamptz,
        previous_refresh_token_hash -> Nullable<Text>,
        rotated_at -> Nullable<Timestamptz>,
        grace_refresh_token -> Nullable<Bytea>,
    }
}

diesel::table! {
    oauth_states (state_hash) {
        state_hash -> Text,
        provider -> Text,
        code_verifier -> Text,
        nonce -> Text,
        expires_at -> Timestamptz,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    connector_secrets (id) {
        id -> Uuid,
        organization_id -> Uuid,
        connector_id -> Text,
        name -> Text,
        kek_id -> Text,
        enc_alg -> Text,
        dek_ciphertext -> Bytea,
        dek_iv -> Bytea,
        dek_tag -> Bytea,
        secret_ciphertext -> Bytea,
        secret_iv -> Bytea,
        secret_tag -> Bytea,
        created_by_user_id -> Uuid,
        updated_by_user_id -> Uuid,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    organization_credit_balances (organization_id) {
        organization_id -> Uuid,
        balance_credits -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    organization_credit_ledger (id) {
        id -> Uuid,
        organization_id -> Uuid,
        delta_credits -> Int8,
        reason -> Text,
        stripe_event_id -> Nullable<Text>,
        workflow_run_id -> Nullable<Uuid>,
        created_by_user_id -> Nullable<Uuid>,
        metadata -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(memberships -> organizations (organization_id));
diesel::joinable!(memberships -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    roles,
    users,
    organizations,
    memberships,
    organization_invitations,
    auth_sessions,
    oauth_states,
    connector_secrets,
    organization_credit_balances,
    organization_credit_ledger,
);

diesel::table! {
    secret_kek_refs (organization_id, kek_id) {
        organization_id -> Uuid,
        kek_id -> Text,
        rows -> Int8,
    }
}

diesel::allow_tables_to_appear_in_same_query!(connector_secrets, secret_kek_refs);

diesel::table! {
    workflows (id) {
        id -> Uuid,
        organization_id -> Uuid,
        family_id -> Uuid,
        revision -> Int4,
        source_workflow_id -> Nullable<Uuid>,
        name -> Text,
        status -> Text,
        version -> Int4,
        #[sql_name = "dsl"]
        dsl_doc -> Jsonb,
        editor_state -> Nullable<Jsonb>,
        created_by_user_id -> Uuid,
        published_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    workflow_runs (id) {
        id -> Uuid,
        organization_id -> Uuid,
        workflow_id -> Uuid,
        trigger_type -> Text,
        status -> Text,
        attempt_count -> Int4,
        max_attempts -> Int4,
        next_attempt_at -> Nullable<Timestamptz>,
        cursor_node_index -> Int4,
        blocked_request_id -> Nullable<Text>,
        blocked_node_id -> Nullable<Text>,
        blocked_node_type -> Nullable<Text>,
        blocked_kind -> Nullable<Text>,
        blocked_at -> Nullable<Timestamptz>,
        blocked_timeout_at -> Nullable<Timestamptz>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamptz>,
        requested_by_user_id -> Uuid,
        input -> Nullable<Jsonb>,
        output -> Nullable<Jsonb>,
        error -> Nullable<Text>,
        created_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
        remote_result -> Nullable<Jsonb>,
    }
}

diesel::table! {
    workflow_run_events (id) {
        id -> Uuid,
        seq -> Int8,
        organization_id -> Uuid,
        workflow_id -> Uuid,
        run_id -> Uuid,
        attempt_count -> Int4,
        event_type -> Text,
        node_id -> Nullable<Text>,
        node_type -> Nullable<Text>,
        level -> Text,
        message -> Nullable<Text>,
        payload -> Nullable<Jsonb>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    workflow_run_steps (id) {
        id -> Int8,
        organization_id -> Uuid,
        run_id -> Uuid,
        node_id -> Text,
        step -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(workflow_runs -> workflows (workflow_id));
diesel::allow_tables_to_appear_in_same_query!(
    workflows,
    workflow_runs,
    workflow_run_events,
    workflow_run_steps
);

diesel::table! {
    execution_workspaces (id) {
        id -> Uuid,
        organization_id -> Uuid,
        owner_type -> Text,
        owner_id -> Uuid,
        current_version -> Int8,
        current_object_key -> Text,
        current_etag -> Nullable<Text>,
        lock_token -> Nullable<Text>,
        lock_expires_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    organization_executors (id) {
        id -> Uuid,
        organization_id -> Uuid,
        name -> Text,
        token_hash -> Text,
        revoked_at -> Nullable<Timestamptz>,
        last_seen_at -> Nullable<Timestamptz>,
        capabilities -> Nullable<Jsonb>,
        labels -> Array<Text>,
        created_by_user_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    executor_pairing_tokens (id) {
        id -> Uuid,
        organization_id -> Uuid,
        token_hash -> Text,
        labels -> Array<Text>,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        created_by_user_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    managed_executors (id) {
        id -> Uuid,
        name -> Text,
        labels -> Array<Text>,
        capabilities -> Nullable<Jsonb>,
        token_hash -> Nullable<Text>,
        revoked_at -> Nullable<Timestamptz>,
        last_seen_at -> Nullable<Timestamptz>,
        max_in_flight -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(organization_executors, executor_pairing_tokens);

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        organization_id -> Uuid,
        name -> Text,
        prefix -> Text,
        secret_hash -> Text,
        scopes -> Array<Text>,
        creator_role -> Text,
        created_by_user_id -> Uuid,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    llm_usage (id) {
        id -> Uuid,
        organization_id -> Uuid,
        session_id -> Nullable<Uuid>,
        run_id -> Nullable<Uuid>,
        node_id -> Nullable<Text>,
        provider -> Text,
        model -> Text,
        input_tokens -> Int8,
        output_tokens -> Int8,
        latency_ms -> Int8,
        cost_micros -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    agent_sessions (id) {
        id -> Uuid,
        organization_id -> Uuid,
        created_by_user_id -> Uuid,
        title -> Text,
        status -> Text,
        pinned_agent_id -> Nullable<Uuid>,
        executor_selector -> Nullable<Jsonb>,
        selector_tag -> Nullable<Text>,
        selector_group -> Nullable<Text>,
        engine_id -> Text,
        toolset_id -> Nullable<Uuid>,
        llm_provider -> Text,
        llm_model -> Text,
        llm_secret_id -> Nullable<Uuid>,
        tool_calling -> Text,
        tools_allow -> Jsonb,
        limits -> Jsonb,
        prompt_system -> Nullable<Text>,
        prompt_instructions -> Text,
        runtime -> Jsonb,
        last_seq -> Int4,
        answered_seq -> Int4,
        last_user_seq -> Int4,
        llm_calls -> Int8,
        input_tokens -> Int8,
        output_tokens -> Int8,
        cost_micros -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        last_activity_at -> Timestamptz,
    }
}

diesel::table! {
    agent_session_events (id) {
        id -> Uuid,
        organization_id -> Uuid,
        session_id -> Uuid,
        seq -> Int4,
        event_type -> Text,
        level -> Text,
        payload -> Nullable<Jsonb>,
        idempotency_key -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(agent_session_events -> agent_sessions (session_id));
diesel::allow_tables_to_appear_in_same_query!(agent_sessions, agent_session_events);
