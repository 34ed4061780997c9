-- Demo tenant data DB: the business tables the seeds list, each keyed by
-- tenant_id, with row-level security on the tenant setting so a shared data
-- DB isolates its tenants even for statements without a tenant filter.
-- :data_role is the role pgtenant connects as (not a superuser: RLS applies).
CREATE TABLE accounts (id serial PRIMARY KEY, tenant_id text NOT NULL, name text NOT NULL, industry text, created_at timestamptz DEFAULT now());
CREATE TABLE contacts (id serial PRIMARY KEY, tenant_id text NOT NULL, account_id int REFERENCES accounts(id), first_name text, last_name text, email text);
CREATE TABLE opportunities (id serial PRIMARY KEY, tenant_id text NOT NULL, account_id int REFERENCES accounts(id), name text, stage text, amount numeric(12,2));
CREATE TABLE events (id serial PRIMARY KEY, tenant_id text NOT NULL, account_id int REFERENCES accounts(id), name text, starts_at timestamptz);
CREATE TABLE event_dates (id serial PRIMARY KEY, tenant_id text NOT NULL, event_id int REFERENCES events(id), day date);
CREATE TABLE invoices (id serial PRIMARY KEY, tenant_id text NOT NULL, account_id int REFERENCES accounts(id), number text, total numeric(12,2), status text DEFAULT 'open');
CREATE TABLE invoice_line_items (id serial PRIMARY KEY, tenant_id text NOT NULL, invoice_id int REFERENCES invoices(id), description text, amount numeric(12,2));
CREATE TABLE tenant_settings (tenant_id text PRIMARY KEY, settings jsonb NOT NULL DEFAULT '{}');
CREATE INDEX ON accounts (tenant_id);
CREATE INDEX ON contacts (tenant_id);
CREATE INDEX ON opportunities (tenant_id);
CREATE INDEX ON events (tenant_id);
CREATE INDEX ON invoices (tenant_id);
DO $$DECLARE t text; BEGIN
  FOREACH t IN ARRAY ARRAY['accounts','contacts','opportunities','events','event_dates','invoices','invoice_line_items','tenant_settings'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_setting(''app.tenant_id'', true)) WITH CHECK (tenant_id = current_setting(''app.tenant_id'', true))', t);
  END LOOP;
END$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"data_role";
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO :"data_role";
