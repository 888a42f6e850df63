-- Which KEKs wrap secrets of which orgs, kept by a trigger. Start-up asks `app.secret_kek_ids()` (key ids
-- only) to refuse a keyring that cannot decrypt existing secrets; `vespid secrets rotate` reads the table as
-- the owner role to find the orgs to re-wrap. The application role cannot read the table itself (it lists
-- org ids across tenants), and `connector_secrets` stays strictly RLS-bound.
CREATE TABLE secret_kek_refs (
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  kek_id text NOT NULL,
  rows bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (organization_id, kek_id)
);

CREATE OR REPLACE FUNCTION app.track_secret_kek() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    UPDATE secret_kek_refs SET rows = rows - 1
      WHERE organization_id = OLD.organization_id AND kek_id = OLD.kek_id;
    DELETE FROM secret_kek_refs
      WHERE organization_id = OLD.organization_id AND kek_id = OLD.kek_id AND rows <= 0;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO secret_kek_refs (organization_id, kek_id, rows) VALUES (NEW.organization_id, NEW.kek_id, 1)
      ON CONFLICT (organization_id, kek_id) DO UPDATE SET rows = secret_kek_refs.rows + 1;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER connector_secrets_kek_refs
  AFTER INSERT OR UPDATE OF kek_id, organization_id OR DELETE ON connector_secrets
  FOR EACH ROW EXECUTE FUNCTION app.track_secret_kek();

-- Key ids in use, nothing about tenants.
CREATE OR REPLACE FUNCTION app.secret_kek_ids() RETURNS SETOF text
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT DISTINCT kek_id FROM secret_kek_refs WHERE rows > 0
$$;
REVOKE EXECUTE ON FUNCTION app.secret_kek_ids() FROM PUBLIC;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vespid_app') THEN
    REVOKE EXECUTE ON FUNCTION app.track_secret_kek() FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION app.secret_kek_ids() TO vespid_app;
  END IF;
END $$;
