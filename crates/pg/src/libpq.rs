//! The one place that calls libpq directly: `PQconninfoParse`, libpq's own reading of a
//! connection string, so that what pgops thinks a string means is what libpq (and so diesel,
//! `psql` and `pg_dump`) will do with it; and a connection that speaks only the simple query
//! protocol (`PQexec`), for peers such as PgBouncer's admin console that refuse the extended
//! protocol diesel uses.

// The workspace denies unsafe code; this module is the documented exception. Each block
// below upholds libpq's contract for PQconninfoParse, PQconninfoFree and PQfreemem.
#![allow(unsafe_code)]

use std::{
    ffi::{CStr, CString, c_char},
    ptr,
};

/// The options a connection string sets explicitly (libpq inserts no defaults here), in
/// libpq's order, or libpq's error message.
pub(crate) fn parse(conninfo: &str) -> Result<Vec<(String, String)>, String> {
    let c_conninfo = CString::new(conninfo)
        .map_err(|_| "the connection string contains a NUL byte".to_owned())?;
    let mut errmsg: *mut c_char = ptr::null_mut();
    // SAFETY: `c_conninfo` is a valid NUL-terminated string that outlives the call, and
    // `errmsg` is a valid out-pointer. libpq returns either NULL (and maybe an error message
    // we must free with PQfreemem) or an array we must free with PQconninfoFree.
    let options = unsafe { pq_sys::PQconninfoParse(c_conninfo.as_ptr(), &mut errmsg) };
    if options.is_null() {
        let message = if errmsg.is_null() {
            "libpq could not parse the connection string (out of memory)".to_owned()
        } else {
            // SAFETY: libpq set `errmsg` to a NUL-terminated string it allocated; we copy it
            // and free it exactly once.
            let text = unsafe { CStr::from_ptr(errmsg) }
                .to_string_lossy()
                .trim()
                .to_owned();
            unsafe { pq_sys::PQfreemem(errmsg.cast()) };
            text
        };
        return Err(message);
    }
    let mut found = Vec::new();
    let mut cursor = options;
    loop {
        // SAFETY: `cursor` points into the array libpq returned, which ends with an entry
        // whose keyword is NULL; we stop there and never read past it.
        let option = unsafe { &*cursor };
        if option.keyword.is_null() {
            break;
        }
        if !option.val.is_null() {
            // SAFETY: keyword and val are NUL-terminated strings owned by the array, alive
            // until PQconninfoFree below; we copy them.
            let (keyword, value) = unsafe {
                (
                    CStr::from_ptr(option.keyword)
                        .to_string_lossy()
                        .into_owned(),
                    CStr::from_ptr(option.val).to_string_lossy().into_owned(),
                )
            };
            found.push((keyword, value));
        }
        // SAFETY: the terminating entry has not been reached, so the next one exists.
        cursor = unsafe { cursor.add(1) };
    }
    // SAFETY: `options` came from PQconninfoParse and is freed once; nothing borrows it now.
    unsafe { pq_sys::PQconninfoFree(options) };
    if !errmsg.is_null() {
        // SAFETY: as above; libpq may set a message even on success (it does not today).
        unsafe { pq_sys::PQfreemem(errmsg.cast()) };
    }
    Ok(found)
}

/// A libpq connection used with `PQexec` only.
pub(crate) struct Simple {
    conn: *mut pq_sys::PGconn,
}

// SAFETY: a PGconn may be used from any thread as long as one thread uses it at a time, which
// `&mut self` on every method guarantees.
unsafe impl Send for Simple {}

/// One result: column names and rows of text values (`None` for NULL).
pub(crate) type Table = (Vec<String>, Vec<Vec<Option<String>>>);

impl Simple {
    /// Connects; the error is libpq's message.
    pub(crate) fn connect(conninfo: &str) -> Result<Simple, String> {
        let c_conninfo = CString::new(conninfo)
            .map_err(|_| "the connection string contains a NUL byte".to_owned())?;
        // SAFETY: a valid NUL-terminated string; libpq returns a connection object (possibly
        // failed) that we own and free with PQfinish in Drop, or NULL when out of memory.
        let conn = unsafe { pq_sys::PQconnectdb(c_conninfo.as_ptr()) };
        if conn.is_null() {
            return Err("libpq could not allocate a connection".into());
        }
        let simple = Simple { conn };
        // SAFETY: `conn` is a live connection object.
        if unsafe { pq_sys::PQstatus(conn) } != pq_sys::ConnStatusType::CONNECTION_OK {
            return Err(simple.error());
        }
        Ok(simple)
    }

    /// Runs one statement with `PQexec` and returns its rows.
    pub(crate) fn query(&mut self, sql: &str) -> Result<Table, String> {
        let c_sql = CString::new(sql).map_err(|_| "the query contains a NUL byte".to_owned())?;
        // SAFETY: a live connection and a valid string; the result is freed below, once.
        let result = unsafe { pq_sys::PQexec(self.conn, c_sql.as_ptr()) };
        if result.is_null() {
            return Err(self.error());
        }
        // SAFETY: `result` is a live PGresult until PQclear; every index used is within the
        // counts libpq reports, and every string is copied before the result is freed.
        let table = unsafe {
            match pq_sys::PQresultStatus(result) {
                pq_sys::ExecStatusType::PGRES_TUPLES_OK
                | pq_sys::ExecStatusType::PGRES_COMMAND_OK => {
                    let (rows, fields) = (pq_sys::PQntuples(result), pq_sys::PQnfields(result));
                    let columns = (0..fields)
                        .map(|f| text(pq_sys::PQfname(result, f)))
                        .collect();
                    let values = (0..rows)
                        .map(|r| {
                            (0..fields)
                                .map(|f| {
                                    (pq_sys::PQgetisnull(result, r, f) == 0)
                                        .then(|| text(pq_sys::PQgetvalue(result, r, f)))
                                })
                                .collect()
                        })
                        .collect();
                    Ok((columns, values))
                }
                _ => Err(text(pq_sys::PQresultErrorMessage(result))),
            }
        };
        // SAFETY: freed exactly once; nothing borrows it any more.
        unsafe { pq_sys::PQclear(result) };
        table
    }

    fn error(&self) -> String {
        // SAFETY: the message belongs to the live connection; `text` copies it.
        unsafe { text(pq_sys::PQerrorMessage(self.conn)) }
    }
}

impl Drop for Simple {
    fn drop(&mut self) {
        // SAFETY: the connection object is freed exactly once, here.
        unsafe { pq_sys::PQfinish(self.conn) };
    }
}

/// Copies a libpq string (NULL as empty), trimmed.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string alive for the call.
unsafe fn text(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(options: &'a [(String, String)], key: &str) -> Option<&'a str> {
        options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn reads_both_forms_as_libpq_does() {
        let o = parse("postgresql://app:p%40ss@h1:5432,h2:5433/db?target_session_attrs=read-write")
            .unwrap();
        assert_eq!(get(&o, "user"), Some("app"));
        assert_eq!(get(&o, "password"), Some("p@ss"));
        assert_eq!(get(&o, "host"), Some("h1,h2"));
        assert_eq!(get(&o, "port"), Some("5432,5433"));
        assert_eq!(get(&o, "dbname"), Some("db"));
        assert_eq!(get(&o, "target_session_attrs"), Some("read-write"));
        let o = parse(r"host=db password='a b\'c\\d' dbname = app").unwrap();
        assert_eq!(get(&o, "password"), Some(r"a b'c\d"));
        assert_eq!(get(&o, "dbname"), Some("app"));
        assert_eq!(get(&o, "port"), None, "no defaults are inserted");
    }

    #[test]
    fn errors_come_from_libpq() {
        let err = parse("host=db nonsense=1").unwrap_err();
        assert!(err.contains("invalid connection option"), "{err}");
        assert!(parse("host=db\0").is_err());
    }
}
