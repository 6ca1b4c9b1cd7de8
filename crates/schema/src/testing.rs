//! Test databases with the sample schema: migrated once per test binary into a template on the
//! test kit's shared cluster, then cloned per test.

use diesel::{Connection, PgConnection};
use pgops_testkit::{InitResult, Template, TestDatabase};

fn migrate_template(url: &str) -> InitResult {
    let mut conn = PgConnection::establish(url)?;
    crate::migrate(&mut conn)?;
    Ok(())
}

static SCHEMA: Template = Template::new("pgops_schema_template", migrate_template);

/// A fresh database with every migration applied, dropped when the value is dropped.
pub fn database() -> pgops_testkit::Result<TestDatabase> {
    SCHEMA.database()
}
