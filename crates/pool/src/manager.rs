//! The r2d2 connection manager: opens diesel `PgConnection`s with the session settings
//! applied, notices connections a query found dead, and checks idle ones before reuse.

use std::{
    cell::Cell,
    sync::Arc,
    time::{Duration, Instant},
};

use diesel::{
    Connection, PgConnection,
    connection::{CacheSize, Instrumentation, InstrumentationEvent, SimpleConnection},
    r2d2::R2D2Connection,
    result::{DatabaseErrorKind, Error as DieselError},
};

use crate::{
    DatabaseUrl, PoolSettings, Pooler,
    leak::{Registry, Slot},
};

/// Why the pool closed a connection; read by the event handler right after r2d2 drops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// A query on it failed with a connection-level error, or its transaction state is broken.
    Broken,
    /// The round trip before reuse failed.
    ValidationFailed,
}

thread_local! {
    // r2d2 drops a connection that failed `is_valid` or `has_broken` in the same thread, right
    // after asking; the reaper (idle timeout, max lifetime) runs in its own thread.
    static CLOSE_REASON: Cell<Option<CloseReason>> = const { Cell::new(None) };
}

/// Takes the reason recorded for the connection being closed on this thread, if any.
pub(crate) fn take_close_reason() -> Option<CloseReason> {
    CLOSE_REASON.with(Cell::take)
}

/// Per-connection state kept in diesel's instrumentation slot.
#[derive(Debug)]
pub(crate) struct Watch {
    broken: bool,
    /// A write on it was refused as read-only (SQLSTATE 25006).
    read_only: bool,
    last_used: Instant,
    /// Parked with the thread that returned it (see `park`): `last_used` is when.
    parked: bool,
    /// Where and since when the connection is checked out, for leak detection.
    pub(crate) slot: Arc<Slot>,
}

impl Watch {
    /// Whether a query on the connection failed at the connection level.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// Whether a statement on it was refused as read-only (SQLSTATE 25006).
    pub(crate) fn refused_as_read_only(&self) -> bool {
        self.read_only
    }

    /// Records a return that parks the connection instead of handing it to r2d2: it counts as
    /// used now, and its return to r2d2 later does not count again.
    pub(crate) fn park(&mut self) {
        self.last_used = Instant::now();
        self.parked = true;
    }

    /// Records that a parked connection was checked out again.
    pub(crate) fn unpark(&mut self) {
        self.parked = false;
    }

    /// Marks the connection for closing when it returns to the pool.
    pub(crate) fn discard(&mut self) {
        self.broken = true;
    }
}

impl Instrumentation for Watch {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::FinishQuery {
            error: Some(error), ..
        } = event
            && is_connection_error(error)
        {
            self.broken = true;
            self.read_only |= matches!(
                error,
                DieselError::DatabaseError(DatabaseErrorKind::ReadOnlyTransaction, _)
            );
        }
    }
}

/// Opens and checks connections for r2d2.
#[derive(Debug)]
pub(crate) struct Manager {
    url: DatabaseUrl,
    session_sql: String,
    /// Named prepared statements would collide on server connections PgBouncer shares.
    cache_statements: bool,
    validate_after_idle: Duration,
    slots: Arc<Registry>,
}

impl Manager {
    pub(crate) fn new(url: DatabaseUrl, settings: &PoolSettings, slots: Arc<Registry>) -> Self {
        // `application_name` as a startup parameter too: PgBouncer keeps those per client.
        let url = url
            .with_default("application_name", &settings.application_name)
            .unwrap_or(url);
        Manager {
            url,
            session_sql: session_sql(settings),
            cache_statements: settings.pooler != Pooler::Transaction,
            validate_after_idle: settings.validate_after_idle,
            slots,
        }
    }
}

/// Errors the manager gives r2d2; their text is already scrubbed of the password.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ManagerError(pub(crate) String);

impl r2d2::ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = ManagerError;

    fn connect(&self) -> Result<PgConnection, ManagerError> {
        let mut conn = PgConnection::establish(self.url.expose())
            .map_err(|e| ManagerError(self.url.scrub(e.to_string().trim())))?;
        if !self.cache_statements {
            conn.set_prepared_statement_cache_size(CacheSize::Disabled);
        }
        if !self.session_sql.is_empty() {
            conn.batch_execute(&self.session_sql).map_err(|e| {
                ManagerError(format!(
                    "applying session settings: {}",
                    self.url.scrub(&e.to_string())
                ))
            })?;
        }
        conn.set_instrumentation(Watch {
            broken: false,
            read_only: false,
            last_used: Instant::now(),
            parked: false,
            slot: self.slots.register(),
        });
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut PgConnection) -> Result<(), ManagerError> {
        let recently_used =
            watch(conn).is_some_and(|w| w.last_used.elapsed() < self.validate_after_idle);
        if recently_used {
            return Ok(());
        }
        conn.ping().map_err(|e| {
            CLOSE_REASON.with(|r| r.set(Some(CloseReason::ValidationFailed)));
            ManagerError(format!(
                "connection failed its check before reuse: {}",
                self.url.scrub(&e.to_string())
            ))
        })
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        let broken = std::thread::panicking()
            || R2D2Connection::is_broken(conn)
            || watch(conn).is_some_and(|w| {
                // A parked connection was last used when it was parked.
                if !std::mem::take(&mut w.parked) {
                    w.last_used = Instant::now();
                }
                w.broken
            });
        if broken {
            CLOSE_REASON.with(|r| r.set(Some(CloseReason::Broken)));
        }
        broken
    }
}

/// The pool's state kept in a connection (absent if someone replaced its instrumentation).
pub(crate) fn watch(conn: &mut PgConnection) -> Option<&mut Watch> {
    conn.instrumentation().downcast_mut::<Watch>()
}

/// Errors after which the connection cannot be trusted again. A write refused as read-only
/// (SQLSTATE 25006) counts: its server was demoted to a standby after a failover or
/// switchover (or the session was set read-only), and a fresh connection is the only way to
/// reach the new primary.
fn is_connection_error(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection
                | DatabaseErrorKind::UnableToSendCommand
                | DatabaseErrorKind::ReadOnlyTransaction,
            _
        ) | DieselError::BrokenTransactionManager
    )
}

/// The `SET` statements every new session runs (values in milliseconds; 0 means off). Behind
/// transaction pooling none at all: a `SET` stays on the server connection, which other
/// clients use next (PgBouncer 1.18 does not even restore `application_name` set this way;
/// the pool sends it as a startup parameter instead, which PgBouncer keeps per client).
pub fn session_sql(settings: &PoolSettings) -> String {
    if settings.pooler == Pooler::Transaction {
        return String::new();
    }
    let application = format!(
        "SET application_name = '{}'",
        settings.application_name.replace('\'', "''")
    );
    let ms = |d: Option<Duration>| d.map_or(0, |d| d.as_millis());
    format!(
        "SET statement_timeout = {}; SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}; {application}",
        ms(settings.statement_timeout),
        ms(settings.lock_timeout),
        ms(settings.idle_in_transaction_session_timeout),
    )
}
