//! The one place that calls libpq directly: `PQconninfoParse`, libpq's own reading of a
//! connection string, so that what pgops thinks a string means is what libpq (and so diesel,
//! `psql` and `pg_dump`) will do with it.

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
