DROP TRIGGER IF EXISTS connector_secrets_kek_refs ON connector_secrets;
DROP FUNCTION IF EXISTS app.track_secret_kek();
DROP FUNCTION IF EXISTS app.secret_kek_ids();
DROP TABLE IF EXISTS secret_kek_refs;
