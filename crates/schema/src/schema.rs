//! diesel `table!` definitions of the sample schema; a test checks them column by column
//! against the migrated database.

// `table!` generates a module, a struct per column and more: the tables are documented in
// docs/database/schema.md and the migrations, not item by item here.
#![allow(missing_docs)]

diesel::table! {
    organizations (id) {
        id -> Int8,
        name -> Text,
        slug -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    users (id) {
        id -> Int8,
        organization_id -> Int8,
        email -> Text,
        full_name -> Text,
        role -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Int8,
        user_id -> Int8,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        last_seen_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        user_agent -> Nullable<Text>,
    }
}

diesel::table! {
    patients (id) {
        id -> Int8,
        organization_id -> Int8,
        mrn -> Text,
        first_name -> Text,
        last_name -> Text,
        date_of_birth -> Date,
        status -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    encounters (id) {
        id -> Int8,
        patient_id -> Int8,
        provider_id -> Int8,
        kind -> Text,
        status -> Text,
        started_at -> Timestamptz,
        ended_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    notes (id) {
        id -> Int8,
        encounter_id -> Int8,
        provider_id -> Int8,
        kind -> Text,
        body -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        signed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    audit_logs (id) {
        id -> Int8,
        user_id -> Nullable<Int8>,
        action -> Text,
        entity_type -> Nullable<Text>,
        entity_id -> Nullable<Int8>,
        details -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(users -> organizations (organization_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(patients -> organizations (organization_id));
diesel::joinable!(encounters -> patients (patient_id));
diesel::joinable!(encounters -> users (provider_id));
diesel::joinable!(notes -> encounters (encounter_id));
diesel::joinable!(notes -> users (provider_id));
diesel::joinable!(audit_logs -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    users,
    sessions,
    patients,
    encounters,
    notes,
    audit_logs
);
