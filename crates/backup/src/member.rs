//! Which server of a cluster a backup reads from. A libpq multi-host URL
//! (`postgresql://h1:p1,h2:p2,h3:p3/db?target_session_attrs=read-write`) names every member of
//! a cluster whose primary changes; a backup goes to the member it needs (the primary unless
//! a standby is asked for), through a single-host string so that `pg_basebackup` and
//! `pg_dump` reach exactly the server that was checked, and the manifest names that server.

use pgops_pg::DatabaseUrl;
use serde::Deserialize;

use crate::{Error, Result, staging::connect};

/// The role a backup asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server that accepts writes.
    Primary,
    /// A server in recovery (a streaming replica).
    Standby,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
        })
    }
}

/// The member of `url` to work with. A single-host string is used as it is (checked against
/// `want` when given); a multi-host one is probed member by member (two seconds each at most,
/// unless the string sets `connect_timeout`) for the first that has the role wanted, the
/// primary by default. The error lists what each member answered.
pub fn pick(url: &DatabaseUrl, want: Option<Role>) -> Result<DatabaseUrl> {
    let servers = url.servers();
    if servers.len() == 1 && want.is_none() {
        return Ok(url.clone());
    }
    let want = want.unwrap_or(Role::Primary);
    let mut seen = Vec::new();
    for server in &servers {
        let member = if servers.len() == 1 {
            url.clone()
        } else {
            url.for_server(server)?
                .with_default("connect_timeout", "2")?
        };
        match role_of(&member) {
            Ok(role) if role == want => return Ok(member),
            Ok(role) => seen.push(format!("{server} is a {role}")),
            Err(e) => seen.push(format!(
                "{server} did not answer ({})",
                pgops_pg::report(&e)
            )),
        }
    }
    Err(Error::Invalid(format!(
        "no {want} among the servers of {url}: {}; {}",
        seen.join(", "),
        match want {
            Role::Primary =>
                "wait for the failover to finish, or take the backup from a standby (--from standby)",
            Role::Standby =>
                "add a replica's host to the URL, or take the backup from the primary (--from primary)",
        }
    )))
}

fn role_of(url: &DatabaseUrl) -> Result<Role> {
    #[derive(Deserialize)]
    struct Recovery {
        in_recovery: bool,
    }
    let mut conn = connect(url)?;
    let r: Recovery = pgops_pg::rows::row(
        &mut conn,
        "SELECT pg_is_in_recovery() AS in_recovery",
        "asking whether the server is in recovery",
    )?;
    Ok(if r.in_recovery {
        Role::Standby
    } else {
        Role::Primary
    })
}
