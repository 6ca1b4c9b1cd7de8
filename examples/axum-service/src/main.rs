//! An axum service on pgops: one pool to the primary tuned for `PGOPS_ENV`, reads on the
//! replicas within the lag budget, read-your-writes after a write, and the pools' metrics with
//! the database's on `/metrics`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use diesel::{
    QueryableByName, RunQueryDsl,
    sql_types::{BigInt, Bool, Text},
};
use serde::{Deserialize, Serialize};

/// What every handler shares: the replica router over the service's primary pool.
#[derive(Clone)]
struct AppState {
    db: pgops_router::Router,
}

#[derive(Deserialize)]
struct NewOrganization {
    name: String,
    slug: String,
}

#[derive(Serialize, QueryableByName)]
struct Organization {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    name: String,
    /// Where the read-back ran: a replica that had replayed the write, or the primary.
    #[diesel(sql_type = Bool)]
    read_on_replica: bool,
}

#[tokio::main]
#[allow(clippy::print_stdout)] // says where it listens, once
async fn main() -> anyhow::Result<()> {
    // First: the pools record their metrics through this recorder.
    let metrics = pgops_health::install_recorder()?;
    // DATABASE_URL, PGOPS_ENV, pgops.toml and PGOPS_POOL_*; replicas from
    // DATABASE_REPLICA_URLS, their pools and lag budget from [router] / PGOPS_ROUTER_*.
    let config = pgops_pool::Config::load()?;
    let pool = pgops_pool::Pool::connect(&config)?;
    let exporter = Arc::new(pgops_health::Exporter::new(
        pool.url().clone(),
        config.replica_urls.clone(),
        pgops_health::Options::default(),
        Some(metrics),
    )?);
    let db = pgops_router::Router::from_config(pool, &config);

    let app = Router::new()
        .route("/organizations", post(create_organization))
        .route("/organizations/count", get(count_organizations))
        .with_state(AppState { db })
        // /metrics, /health and /ready, behind PGOPS_METRICS_TOKEN when it is set.
        .merge(pgops_health::server::router(
            exporter,
            std::env::var("PGOPS_METRICS_TOKEN").ok(),
        ));
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{listen}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// Writes on the primary, then reads the row back where the write is already visible.
async fn create_organization(
    State(state): State<AppState>,
    Json(new): Json<NewOrganization>,
) -> Result<(StatusCode, Json<Organization>), (StatusCode, String)> {
    // The pools are synchronous (r2d2 and diesel): run database work off the async threads.
    tokio::task::spawn_blocking(move || {
        let (id, token) = state.db.write(|conn| {
            #[derive(QueryableByName)]
            struct Id {
                #[diesel(sql_type = BigInt)]
                id: i64,
            }
            diesel::sql_query("INSERT INTO organizations (name, slug) VALUES ($1, $2) RETURNING id")
                .bind::<Text, _>(&new.name)
                .bind::<Text, _>(&new.slug)
                .get_result::<Id>(conn)
                .map(|row| row.id)
                .map_err(pgops_router::Error::from)
        })?;
        // With the token the read goes to a replica that has replayed the write, or else to
        // the primary: never older than the write.
        state.db.read(Some(token), |conn| {
            diesel::sql_query(
                "SELECT id, name, pg_is_in_recovery() AS read_on_replica FROM organizations WHERE id = $1",
            )
            .bind::<BigInt, _>(id)
            .get_result::<Organization>(conn)
            .map_err(pgops_router::Error::from)
        })
    })
    .await
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map(|organization| (StatusCode::CREATED, Json(organization)))
    .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// A read any replica within the lag budget may serve.
async fn count_organizations(
    State(state): State<AppState>,
) -> Result<Json<i64>, (StatusCode, String)> {
    tokio::task::spawn_blocking(move || {
        state.db.read(None, |conn| {
            #[derive(QueryableByName)]
            struct Count {
                #[diesel(sql_type = BigInt)]
                count: i64,
            }
            diesel::sql_query("SELECT count(*) AS count FROM organizations")
                .get_result::<Count>(conn)
                .map(|row| row.count)
                .map_err(pgops_router::Error::from)
        })
    })
    .await
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map(Json)
    .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}
