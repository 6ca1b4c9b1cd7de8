//! Replication as the primary and each replica see it: senders, receivers, lag, and
//! replication slots.

use serde::Deserialize;

use super::{Context, Session};
use crate::{
    Result,
    text::{Family, Kind},
};

pub(super) fn replication(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct R {
        is_replica: bool,
        lag: f64,
        timeline: Option<i32>,
    }
    #[derive(Deserialize)]
    struct Standby {
        application_name: String,
        client_addr: String,
        state: String,
        lag_bytes: Option<f64>,
        replay_lag: Option<f64>,
    }
    let me: Vec<R> = session.rows(
        "SELECT pg_is_in_recovery() AS is_replica,
                CASE WHEN NOT pg_is_in_recovery() THEN 0
                     WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                     ELSE greatest(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())) END::float8 AS lag,
                CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver)
                     ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline",
        "reading the replication state",
    )?;
    let server = [("server", ctx.server.as_str())];
    let mut fams = Vec::new();
    if let Some(me) = me.first() {
        fams.push(Family::single(
            "pg_replication_lag_seconds",
            "Replication lag behind master in seconds",
            Kind::Gauge,
            &server,
            me.lag,
        ));
        // The same figure under the name the postgres_exporter mixin's lag alert reads (the
        // 0.11 `pg_replication` query's).
        fams.push(Family::single(
            "pg_replication_lag",
            "Replication lag behind master in seconds",
            Kind::Gauge,
            &server,
            me.lag,
        ));
        fams.push(Family::single(
            "pg_replication_is_replica",
            "Indicates if the server is a replica",
            Kind::Gauge,
            &server,
            f64::from(u8::from(me.is_replica)),
        ));
        // A standby's is the one its WAL receiver streams (seen with pg_monitor); a change is
        // a failover or switchover.
        if let Some(timeline) = me.timeline {
            fams.push(Family::single(
                "pgops_server_timeline",
                "The timeline the server writes (a primary) or streams (a standby); it changes with every promotion",
                Kind::Gauge,
                &server,
                f64::from(timeline),
            ));
        }
        if me.is_replica {
            return Ok(fams);
        }
    }
    let standbys: Vec<Standby> = session.rows(
        "SELECT coalesce(application_name, '') AS application_name,
                coalesce(host(client_addr), 'local') AS client_addr, coalesce(state, '') AS state,
                pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS lag_bytes,
                extract(epoch FROM replay_lag)::float8 AS replay_lag
         FROM pg_stat_replication ORDER BY 1, 2",
        "reading pg_stat_replication",
    )?;
    let mut bytes = Family::new(
        "pgops_replication_lag_bytes",
        "WAL bytes a standby has yet to replay (from LSNs on the primary)",
        Kind::Gauge,
    );
    let mut seconds = Family::new(
        "pgops_replication_replay_lag_seconds",
        "The primary's measure of a standby's replay lag (0 while idle)",
        Kind::Gauge,
    );
    for s in &standbys {
        let labels = [
            ("application_name", s.application_name.as_str()),
            ("client_addr", &s.client_addr),
            ("state", &s.state),
        ];
        bytes.push(&labels, s.lag_bytes.unwrap_or(f64::NAN));
        seconds.push(&labels, s.replay_lag.unwrap_or(0.0));
    }
    fams.push(Family::single(
        "pgops_replication_standbys",
        "Standbys connected to the primary",
        Kind::Gauge,
        &[],
        standbys.len() as f64,
    ));
    fams.push(bytes);
    fams.push(seconds);
    Ok(fams)
}

pub(super) fn replication_slots(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct Slot {
        slot_name: String,
        slot_type: String,
        database: String,
        active: bool,
        retained: Option<f64>,
    }
    let slots: Vec<Slot> = session.rows(
        "SELECT slot_name::text AS slot_name, slot_type, coalesce(database::text, '') AS database, active,
                pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()
                                     ELSE pg_current_wal_lsn() END, restart_lsn)::float8 AS retained
         FROM pg_replication_slots ORDER BY 1",
        "reading pg_replication_slots",
    )?;
    let mut active = Family::new(
        "pgops_replication_slot_active",
        "1 when a consumer is connected to the slot",
        Kind::Gauge,
    );
    let mut retained = Family::new(
        "pgops_replication_slot_retained_wal_bytes",
        "WAL the slot keeps on the primary's disk",
        Kind::Gauge,
    );
    // postgres_exporter's names and labels (its `pg_replication_slots` query), which the
    // community mixin's "unused replication slot" alert reads.
    let mut exporter_active = Family::new(
        "pg_replication_slots_active",
        "Flag indicating if the slot is active",
        Kind::Gauge,
    );
    let mut exporter_retained = Family::new(
        "pg_replication_slots_pg_wal_lsn_diff",
        "Replication lag in bytes",
        Kind::Gauge,
    );
    for slot in &slots {
        let labels = [
            ("slot_name", slot.slot_name.as_str()),
            ("slot_type", &slot.slot_type),
        ];
        active.push(&labels, f64::from(u8::from(slot.active)));
        retained.push(&labels, slot.retained.unwrap_or(f64::NAN));
        let labels = [
            ("slot_name", slot.slot_name.as_str()),
            ("database", &slot.database),
            ("server", &ctx.server),
        ];
        exporter_active.push(&labels, f64::from(u8::from(slot.active)));
        exporter_retained.push(&labels, slot.retained.unwrap_or(f64::NAN));
    }
    let inactive = slots.iter().filter(|s| !s.active).count() as f64;
    Ok(vec![
        Family::single(
            "pgops_replication_slots_inactive",
            "Replication slots with no consumer: they retain WAL until dropped",
            Kind::Gauge,
            &[],
            inactive,
        ),
        active,
        retained,
        exporter_active,
        exporter_retained,
    ])
}
