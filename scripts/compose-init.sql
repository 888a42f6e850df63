-- Run once by the postgres image's entrypoint (docker-entrypoint-initdb.d) on an empty data directory,
-- as the superuser, in the POSTGRES_DB database. Written to be idempotent anyway.
--
-- Two roles, kept separate (vespid_app is NOT granted to vespid_owner):
--   vespid_owner  owns the database and runs the migrations (CREATEDB so the tests can create databases)
--   vespid_app    the application's pool role: owns nothing, never superuser, never bypasses RLS
-- The passwords are the development defaults; compose.yaml does not publish PostgreSQL's port to the host.

SELECT 'CREATE ROLE vespid_owner LOGIN PASSWORD ''vespid_owner'''
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vespid_owner') \gexec
SELECT 'CREATE ROLE vespid_app LOGIN PASSWORD ''vespid_app'''
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vespid_app') \gexec

ALTER ROLE vespid_owner WITH LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE vespid_app WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;

-- pgcrypto in template1 first, so every database created later (including per-test ones) has it.
-- (PostgreSQL 13+ has gen_random_uuid() built in; this is belt and braces.)
\connect template1
CREATE EXTENSION IF NOT EXISTS pgcrypto;

\connect postgres
SELECT 'CREATE DATABASE vespid OWNER vespid_owner'
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'vespid') \gexec
ALTER DATABASE vespid OWNER TO vespid_owner;

\connect vespid
CREATE EXTENSION IF NOT EXISTS pgcrypto;
