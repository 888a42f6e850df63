DROP TABLE IF EXISTS organization_credit_ledger, organization_credit_balances, connector_secrets, oauth_states,
  auth_sessions, organization_invitations, memberships, organizations, users, roles CASCADE;
DROP FUNCTION IF EXISTS app.current_org_uuid();
DROP FUNCTION IF EXISTS app.current_user_uuid();
DROP SCHEMA IF EXISTS app;
