//! Patroni's view of an HA cluster, from its REST API's `/cluster`: who the members are and
//! which one leads. The router asks it once at start to find the members, then on every
//! monitor round to explain a missing primary (no leader, DCS lost) in errors and metrics.

use std::time::Duration;

use serde::Deserialize;

/// A member as `/cluster` lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PatroniMember {
    /// Its Patroni name.
    pub name: String,
    /// `leader`, `replica`, `sync_standby`, `standby_leader`, ...
    pub role: String,
    /// `running`, `streaming`, `stopped`, `starting`, ...
    pub state: String,
    /// Its PostgreSQL host.
    pub host: String,
    /// Its PostgreSQL port.
    pub port: u16,
}

#[derive(Debug, Deserialize)]
struct ClusterView {
    #[serde(default)]
    members: Vec<PatroniMember>,
}

/// An HTTP client that gives up after `timeout`.
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// The members from the first of `urls` whose `/cluster` answers; the error names what each
/// said.
pub(crate) fn members(agent: &ureq::Agent, urls: &[String]) -> Result<Vec<PatroniMember>, String> {
    let mut failures = Vec::new();
    for base in urls {
        let url = format!("{base}/cluster");
        let answer = agent
            .get(&url)
            .call()
            .map_err(|e| e.to_string())
            .and_then(|mut r| r.body_mut().read_to_string().map_err(|e| e.to_string()))
            .and_then(|text| {
                serde_json::from_str::<ClusterView>(&text)
                    .map_err(|e| format!("not Patroni's /cluster: {e}"))
            });
        match answer {
            Ok(view) => return Ok(view.members),
            Err(e) => failures.push(format!("{url}: {e}")),
        }
    }
    Err(failures.join("; "))
}

/// What a round of `/cluster` says about the primary, for a "no primary" error: `None` when
/// Patroni has a running leader.
pub(crate) fn no_leader_reason(view: &Result<Vec<PatroniMember>, String>) -> Option<String> {
    match view {
        Err(e) => Some(format!(
            "Patroni's REST API did not answer ({e}); it stalls like this while its DCS (etcd) is unreachable, and demotes the primary once it cannot renew the leader key (unless failsafe_mode is on)"
        )),
        Ok(members)
            if !members
                .iter()
                .any(|m| m.role == "leader" && m.state == "running") =>
        {
            Some(format!(
                "Patroni reports no running leader ({}); if etcd is unreachable Patroni demotes the primary once it cannot renew its leader key (unless failsafe_mode is on)",
                members
                    .iter()
                    .map(|m| format!("{} {} {}", m.name, m.role, m.state))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
        Ok(_) => None,
    }
}
