-- Active patients of an organization by last name (patient search, census lists).
CREATE INDEX CONCURRENTLY patients_org_last_name_active_idx ON patients (organization_id, last_name) WHERE status = 'active';
