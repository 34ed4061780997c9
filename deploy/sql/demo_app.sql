-- Demo application DB: users (with verifiers set by the demo script), their
-- tenants, roles, audit_log. Shaped after the seeds: metadata only, no
-- business data. Run after deploy/sql/app_db.sql.
CREATE TABLE IF NOT EXISTS roles (id serial PRIMARY KEY, name text UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS permissions (id serial PRIMARY KEY, role_id int REFERENCES roles(id), permission text NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id serial PRIMARY KEY,
    email text UNIQUE NOT NULL,
    full_name text,
    password_hash text NOT NULL,
    is_service_account boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS tenant_users (
    user_id int REFERENCES users(id) ON DELETE CASCADE,
    tenant_id text NOT NULL,
    role_id int REFERENCES roles(id),
    PRIMARY KEY (user_id, tenant_id)
);
CREATE TABLE IF NOT EXISTS tenant_roles (tenant_id text NOT NULL, role_id int REFERENCES roles(id), PRIMARY KEY (tenant_id, role_id));
INSERT INTO roles (name) VALUES ('owner'), ('member'), ('service') ON CONFLICT DO NOTHING;
