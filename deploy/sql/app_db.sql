-- pgtenant: application-DB schema for the tenant registry.
--
-- Idempotent: safe to run any number of times, on a database with no
-- `tenants` table or on an existing one (including the Node app's table
-- with a uuid id; pgtenant reads ids as id::text and never changes the
-- id's type). Runs in one transaction so a failure leaves nothing half-done.

BEGIN;

CREATE TABLE IF NOT EXISTS tenants (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    subdomain  text UNIQUE NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE tenants
    ADD COLUMN IF NOT EXISTS data_source_url          text,
    ADD COLUMN IF NOT EXISTS data_source_password     text,
    ADD COLUMN IF NOT EXISTS data_source_region       text,
    ADD COLUMN IF NOT EXISTS connection_pool_config   jsonb,
    ADD COLUMN IF NOT EXISTS data_source_notes        text,
    ADD COLUMN IF NOT EXISTS tenant_id_in_data_source text,
    ADD COLUMN IF NOT EXISTS status                   text,
    ADD COLUMN IF NOT EXISTS created_at               timestamptz DEFAULT now(),
    ADD COLUMN IF NOT EXISTS updated_at               timestamptz DEFAULT now();

COMMENT ON COLUMN tenants.data_source_url IS
    'postgres://user@host:port/db?sslmode=... of the tenant data DB. Never contains a password.';
COMMENT ON COLUMN tenants.data_source_password IS
    'AES-256-GCM, base64 iv:authTag:ciphertext (Node DataSourceManager format). Never plaintext.';
COMMENT ON COLUMN tenants.connection_pool_config IS
    'pgtenant pool settings: pool_size, min_idle, mode (transaction|session), checkout_timeout_ms, '
    'idle_timeout_ms, max_lifetime_ms, max_connections_per_tenant. Other keys are ignored.';

-- NULL status has always meant the default; make that explicit before the
-- audit trigger exists so this backfill is not logged as a status change.
ALTER TABLE tenants ALTER COLUMN status SET DEFAULT 'active';
UPDATE tenants SET status = 'active' WHERE status IS NULL;
ALTER TABLE tenants ALTER COLUMN status SET NOT NULL;

-- Constraints are added only when existing rows already satisfy them: a
-- NOT VALID constraint would still make every later UPDATE of a legacy row
-- fail. pgtenant treats unknown statuses as suspended anyway; re-run the
-- migration after cleaning such rows up to get the constraint.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'tenants'::regclass AND conname = 'tenants_pgtenant_status_check') THEN
        IF EXISTS (SELECT 1 FROM tenants WHERE status NOT IN ('active', 'suspended')) THEN
            RAISE WARNING 'pgtenant: tenants with a status other than active/suspended exist; '
                          'status CHECK not added (pgtenant treats them as suspended)';
        ELSE
            ALTER TABLE tenants ADD CONSTRAINT tenants_pgtenant_status_check
                CHECK (status IN ('active', 'suspended'));
        END IF;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'tenants'::regclass AND conname = 'tenants_pgtenant_pool_config_check') THEN
        IF EXISTS (SELECT 1 FROM tenants
                   WHERE connection_pool_config IS NOT NULL
                     AND (jsonb_typeof(connection_pool_config) <> 'object'
                          OR coalesce(connection_pool_config->>'mode', 'transaction')
                             NOT IN ('transaction', 'session'))) THEN
            RAISE WARNING 'pgtenant: some connection_pool_config values are not objects or have an '
                          'unknown mode; pool CHECK not added (pgtenant falls back to defaults)';
        ELSE
            ALTER TABLE tenants ADD CONSTRAINT tenants_pgtenant_pool_config_check
                CHECK (connection_pool_config IS NULL
                       OR (jsonb_typeof(connection_pool_config) = 'object'
                           AND coalesce(connection_pool_config->>'mode', 'transaction')
                               IN ('transaction', 'session')));
        END IF;
    END IF;
END
$$;

-- audit_log: created if absent. If the app already has one, the columns the
-- trigger writes are added when missing and nothing else is touched.
CREATE TABLE IF NOT EXISTS audit_log (
    id         bigserial PRIMARY KEY,
    actor      text,
    action     text NOT NULL,
    tenant_id  text,
    details    jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE audit_log
    ADD COLUMN IF NOT EXISTS actor      text,
    ADD COLUMN IF NOT EXISTS action     text,
    ADD COLUMN IF NOT EXISTS tenant_id  text,
    ADD COLUMN IF NOT EXISTS details    jsonb,
    ADD COLUMN IF NOT EXISTS created_at timestamptz DEFAULT now();

-- Masks a password embedded in a URL (scheme://user:secret@host) so audit
-- rows stay clean even if someone bypasses pgtenant and the guard below.
CREATE OR REPLACE FUNCTION pgtenant_redact_url(u text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT regexp_replace(u, '^([^:/?#]+://[^:/@?#]*):[^@/?#]*@', '\1:<redacted>@')
$$;

-- Guard: the password column only ever receives ciphertext and the URL
-- never carries a password. Done in a trigger, not a CHECK, because a CHECK
-- violation's DETAIL quotes the whole row -- i.e. the plaintext we are
-- refusing -- back to the client and into the server log. Only changed
-- values are checked, so legacy rows stay editable.
CREATE OR REPLACE FUNCTION pgtenant_guard_tenant_secrets() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.data_source_password IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.data_source_password IS DISTINCT FROM OLD.data_source_password)
       AND NEW.data_source_password !~ '^[A-Za-z0-9+/]+=*:[A-Za-z0-9+/]+=*:[A-Za-z0-9+/]*=*$' THEN
        RAISE EXCEPTION 'tenants.data_source_password must be encrypted (iv:authTag:ciphertext); use `pgtenant encrypt`'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.data_source_url IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.data_source_url IS DISTINCT FROM OLD.data_source_url)
       AND NEW.data_source_url ~ '^[^:/?#]+://[^/@?#]*:[^/@?#]*@' THEN
        RAISE EXCEPTION 'tenants.data_source_url must not contain a password; store it encrypted in data_source_password'
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

-- Audit: one row per data-source-relevant change. Records who (the
-- pgtenant.actor setting plus the database role), which columns changed,
-- old/new URL (redacted) and status -- never a password value.
CREATE OR REPLACE FUNCTION pgtenant_audit_tenant_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_actor   text := nullif(current_setting('pgtenant.actor', true), '');
    v_who     text;
    v_id      text;
    v_action  text;
    v_changed text[] := ARRAY[]::text[];
    v_details jsonb;
BEGIN
    v_who := CASE WHEN v_actor IS NULL THEN current_user::text
                  ELSE v_actor || ' (db user ' || current_user || ')' END;

    IF TG_OP = 'DELETE' THEN
        v_id := OLD.id::text;
        v_action := 'tenant.deleted';
        v_details := jsonb_build_object(
            'subdomain', OLD.subdomain,
            'old_url', pgtenant_redact_url(OLD.data_source_url),
            'old_status', OLD.status);
    ELSE
        v_id := NEW.id::text;
        IF TG_OP = 'INSERT' THEN
            v_action := 'tenant.created';
        END IF;
        IF TG_OP = 'INSERT' OR NEW.subdomain IS DISTINCT FROM OLD.subdomain THEN
            v_changed := v_changed || 'subdomain'::text; END IF;
        IF (TG_OP = 'INSERT' AND NEW.data_source_url IS NOT NULL)
           OR (TG_OP = 'UPDATE' AND NEW.data_source_url IS DISTINCT FROM OLD.data_source_url) THEN
            v_changed := v_changed || 'data_source_url'::text; END IF;
        IF (TG_OP = 'INSERT' AND NEW.data_source_password IS NOT NULL)
           OR (TG_OP = 'UPDATE' AND NEW.data_source_password IS DISTINCT FROM OLD.data_source_password) THEN
            v_changed := v_changed || 'data_source_password'::text; END IF;
        IF (TG_OP = 'INSERT' AND NEW.data_source_region IS NOT NULL)
           OR (TG_OP = 'UPDATE' AND NEW.data_source_region IS DISTINCT FROM OLD.data_source_region) THEN
            v_changed := v_changed || 'data_source_region'::text; END IF;
        IF (TG_OP = 'INSERT' AND NEW.connection_pool_config IS NOT NULL)
           OR (TG_OP = 'UPDATE' AND NEW.connection_pool_config IS DISTINCT FROM OLD.connection_pool_config) THEN
            v_changed := v_changed || 'connection_pool_config'::text; END IF;
        IF (TG_OP = 'INSERT' AND NEW.data_source_notes IS NOT NULL)
           OR (TG_OP = 'UPDATE' AND NEW.data_source_notes IS DISTINCT FROM OLD.data_source_notes) THEN
            v_changed := v_changed || 'data_source_notes'::text; END IF;
        IF (TG_OP = 'INSERT' AND NEW.tenant_id_in_data_source IS NOT NULL)
           OR (TG_OP = 'UPDATE' AND NEW.tenant_id_in_data_source IS DISTINCT FROM OLD.tenant_id_in_data_source) THEN
            v_changed := v_changed || 'tenant_id_in_data_source'::text; END IF;
        IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
            v_changed := v_changed || 'status'::text; END IF;

        IF TG_OP = 'UPDATE' THEN
            IF cardinality(v_changed) = 0 THEN
                RETURN NULL; -- e.g. only name changed: not a data-source event
            ELSIF v_changed = ARRAY['status'] THEN
                v_action := CASE NEW.status WHEN 'suspended' THEN 'tenant.suspended'
                                            WHEN 'active' THEN 'tenant.resumed'
                                            ELSE 'tenant.status_changed' END;
            ELSE
                v_action := 'tenant.data_source.updated';
            END IF;
        END IF;

        v_details := jsonb_build_object(
            'changed', to_jsonb(v_changed),
            'subdomain', NEW.subdomain,
            'new_url', pgtenant_redact_url(NEW.data_source_url),
            'new_status', NEW.status,
            'new_region', NEW.data_source_region,
            'new_pool_config', NEW.connection_pool_config);
        IF TG_OP = 'UPDATE' THEN
            v_details := v_details || jsonb_build_object(
                'old_url', pgtenant_redact_url(OLD.data_source_url),
                'old_status', OLD.status,
                'old_region', OLD.data_source_region,
                'old_pool_config', OLD.connection_pool_config);
        END IF;
        IF 'data_source_password' = ANY (v_changed) THEN
            v_details := v_details || jsonb_build_object('password',
                CASE WHEN TG_OP = 'INSERT' THEN 'data_source_password set'
                     WHEN NEW.data_source_password IS NULL THEN 'data_source_password cleared'
                     ELSE 'data_source_password changed' END);
        END IF;
    END IF;

    v_details := v_details || jsonb_build_object('db_user', current_user::text, 'actor_setting', v_actor);

    -- json_populate_record coerces each value to the existing column's real
    -- type, so a pre-existing audit_log with e.g. a uuid tenant_id or a json
    -- details column works without this function knowing about it.
    INSERT INTO audit_log (actor, action, tenant_id, details)
    SELECT r.actor, r.action, r.tenant_id, r.details
    FROM json_populate_record(NULL::audit_log,
           json_build_object('actor', v_who, 'action', v_action,
                             'tenant_id', v_id, 'details', v_details)) AS r;
    RETURN NULL;
END
$$;

-- Notify: proxies LISTEN on pgtenant_tenants and reload just that tenant.
-- Delivered at commit, so listeners never see uncommitted state.
CREATE OR REPLACE FUNCTION pgtenant_notify_tenant_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('pgtenant_tenants', OLD.id::text);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.id IS DISTINCT FROM OLD.id) THEN
        PERFORM pg_notify('pgtenant_tenants', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;

-- TRUNCATE has no rows; an empty payload tells listeners to reload everything.
CREATE OR REPLACE FUNCTION pgtenant_notify_tenants_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgtenant_tenants', '');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS pgtenant_guard_secrets ON tenants;
CREATE TRIGGER pgtenant_guard_secrets
    BEFORE INSERT OR UPDATE ON tenants
    FOR EACH ROW EXECUTE FUNCTION pgtenant_guard_tenant_secrets();

DROP TRIGGER IF EXISTS pgtenant_audit ON tenants;
CREATE TRIGGER pgtenant_audit
    AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION pgtenant_audit_tenant_change();

DROP TRIGGER IF EXISTS pgtenant_notify ON tenants;
CREATE TRIGGER pgtenant_notify
    AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION pgtenant_notify_tenant_change();

DROP TRIGGER IF EXISTS pgtenant_notify_truncate ON tenants;
CREATE TRIGGER pgtenant_notify_truncate
    AFTER TRUNCATE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION pgtenant_notify_tenants_truncated();

COMMIT;
