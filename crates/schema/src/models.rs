//! Rows of the sample schema as Rust types: `Queryable` + `Selectable` for reading, `New*`
//! `Insertable` structs for writing (keys and timestamps come from the database defaults).

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::schema::{audit_logs, encounters, notes, organizations, patients, sessions, users};

/// A tenant.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Serialize, Deserialize)]
#[diesel(table_name = organizations, check_for_backend(diesel::pg::Pg))]
pub struct Organization {
    /// Key.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// URL-safe unique name (`[a-z0-9-]`).
    pub slug: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A new tenant.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = organizations)]
pub struct NewOrganization<'a> {
    /// Display name.
    pub name: &'a str,
    /// URL-safe unique name.
    pub slug: &'a str,
}

/// A clinician or staff member.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Queryable,
    Selectable,
    Identifiable,
    Associations,
    Serialize,
    Deserialize,
)]
#[diesel(table_name = users, belongs_to(Organization), check_for_backend(diesel::pg::Pg))]
pub struct User {
    /// Key.
    pub id: i64,
    /// Tenant.
    pub organization_id: i64,
    /// Lower-case e-mail address, unique among live users.
    pub email: String,
    /// Full name.
    pub full_name: String,
    /// `admin`, `clinician`, `staff` or `auditor`.
    pub role: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Soft-deletion time.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A new user.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    /// Tenant.
    pub organization_id: i64,
    /// Lower-case e-mail address.
    pub email: &'a str,
    /// Full name.
    pub full_name: &'a str,
    /// Role.
    pub role: &'a str,
}

/// A login session.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Associations)]
#[diesel(table_name = sessions, belongs_to(User), check_for_backend(diesel::pg::Pg))]
pub struct Session {
    /// Key.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// Hash of the session token (the token itself is never stored).
    pub token_hash: Vec<u8>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Last request seen.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Client's user agent.
    pub user_agent: Option<String>,
}

/// A new session.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = sessions)]
pub struct NewSession<'a> {
    /// Owner.
    pub user_id: i64,
    /// Hash of the session token.
    pub token_hash: &'a [u8],
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Client's user agent.
    pub user_agent: Option<&'a str>,
}

/// A patient.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Queryable,
    Selectable,
    Identifiable,
    Associations,
    Serialize,
    Deserialize,
)]
#[diesel(table_name = patients, belongs_to(Organization), check_for_backend(diesel::pg::Pg))]
pub struct Patient {
    /// Key.
    pub id: i64,
    /// Tenant.
    pub organization_id: i64,
    /// Medical record number, unique per organization.
    pub mrn: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Date of birth.
    pub date_of_birth: NaiveDate,
    /// `active`, `inactive` or `deceased`.
    pub status: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A new patient.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = patients)]
pub struct NewPatient<'a> {
    /// Tenant.
    pub organization_id: i64,
    /// Medical record number.
    pub mrn: &'a str,
    /// Given name.
    pub first_name: &'a str,
    /// Family name.
    pub last_name: &'a str,
    /// Date of birth.
    pub date_of_birth: NaiveDate,
    /// Status.
    pub status: &'a str,
}

/// A visit.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Queryable,
    Selectable,
    Identifiable,
    Associations,
    Serialize,
    Deserialize,
)]
#[diesel(table_name = encounters, belongs_to(Patient), check_for_backend(diesel::pg::Pg))]
pub struct Encounter {
    /// Key.
    pub id: i64,
    /// Patient seen.
    pub patient_id: i64,
    /// Provider (a user).
    pub provider_id: i64,
    /// `office_visit`, `telehealth`, `inpatient` or `emergency`.
    pub kind: String,
    /// `scheduled`, `open`, `closed` or `cancelled`.
    pub status: String,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End, once over.
    pub ended_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A new visit.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = encounters)]
pub struct NewEncounter<'a> {
    /// Patient seen.
    pub patient_id: i64,
    /// Provider.
    pub provider_id: i64,
    /// Kind.
    pub kind: &'a str,
    /// Status.
    pub status: &'a str,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub ended_at: Option<DateTime<Utc>>,
}

/// A clinical note.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Queryable,
    Selectable,
    Identifiable,
    Associations,
    Serialize,
    Deserialize,
)]
#[diesel(table_name = notes, belongs_to(Encounter), check_for_backend(diesel::pg::Pg))]
pub struct Note {
    /// Key.
    pub id: i64,
    /// Visit it belongs to.
    pub encounter_id: i64,
    /// Author (a user).
    pub provider_id: i64,
    /// `progress`, `history`, `discharge` or `consult`.
    pub kind: String,
    /// Text.
    pub body: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Signature time; a signed note is final.
    pub signed_at: Option<DateTime<Utc>>,
}

/// A new note.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = notes)]
pub struct NewNote<'a> {
    /// Visit.
    pub encounter_id: i64,
    /// Author.
    pub provider_id: i64,
    /// Kind.
    pub kind: &'a str,
    /// Text.
    pub body: &'a str,
    /// Signature time.
    pub signed_at: Option<DateTime<Utc>>,
}

/// An audit trail entry.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Serialize, Deserialize)]
#[diesel(table_name = audit_logs, check_for_backend(diesel::pg::Pg))]
pub struct AuditLog {
    /// Key.
    pub id: i64,
    /// Acting user; `None` for system actions.
    pub user_id: Option<i64>,
    /// What was done (`patient.view`, `note.sign`, ...).
    pub action: String,
    /// Kind of object acted on.
    pub entity_type: Option<String>,
    /// Key of the object acted on.
    pub entity_id: Option<i64>,
    /// Free-form details.
    pub details: serde_json::Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A new audit trail entry.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_logs)]
pub struct NewAuditLog<'a> {
    /// Acting user.
    pub user_id: Option<i64>,
    /// What was done.
    pub action: &'a str,
    /// Kind of object.
    pub entity_type: Option<&'a str>,
    /// Key of the object.
    pub entity_id: Option<i64>,
    /// Details.
    pub details: serde_json::Value,
}
