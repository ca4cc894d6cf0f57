-- Least privilege in the database: the routes never log in as the schema's owner.
--
--   owner            runs these migrations (the `migrate` function only); owns every
--                    table, so only it can ALTER, DROP or disable audit_log's triggers.
--   telephony_route  NOLOGIN group role of the route functions (save, release,
--                    reconcile, buy, update): DML on what they touch, INSERT only on
--                    audit_log, no DDL (no CREATE on the schema, owns nothing).
--   telephony_read   NOLOGIN group role of list-numbers: SELECT on what the status
--                    shows, and not the sealed credential (org_credentials.encrypted_config).
--
-- Login roles are members of these groups: `migrate` creates or updates them from
-- DB_ROUTE_* / DB_READER_* (shared/src/migrate.rs, docs/deploy.md). A group role that
-- already exists (created by a DBA beforehand) is used as it is, so the owner needs
-- CREATEROLE only when it creates them. Roles are cluster-wide while this runs per
-- database: two databases migrating at once may race to create them, hence the
-- exception handlers.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'telephony_route') THEN
        CREATE ROLE telephony_route NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'telephony_read') THEN
        CREATE ROLE telephony_read NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

-- Nobody but the owner creates objects here (PostgreSQL 15 already revokes this from
-- PUBLIC; older servers, RDS's 14 among them, do not).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON organizations, org_credentials, managed_phone_numbers,
              phone_number_mapping, audit_log, refinery_schema_history FROM PUBLIC;

GRANT USAGE ON SCHEMA public TO telephony_route, telephony_read;

-- The routes: read and change the org, its slot, its numbers and their routing;
-- rows are deleted only from managed_phone_numbers (a purchase that bought nothing)
-- and phone_number_mapping (a released number's routing).
GRANT SELECT, INSERT, UPDATE ON organizations, org_credentials TO telephony_route;
GRANT SELECT, INSERT, UPDATE, DELETE ON managed_phone_numbers, phone_number_mapping
    TO telephony_route;
-- The audit log is append-only for them: INSERT, nothing else (not even SELECT).
GRANT INSERT ON audit_log TO telephony_route;

-- list-numbers: the status, and of the slot only its non-secret columns.
GRANT SELECT ON organizations, managed_phone_numbers TO telephony_read;
GRANT SELECT (id, org_id, provider, source, is_active, metadata, created_at, updated_at)
    ON org_credentials TO telephony_read;
