//! The server settings a test cluster runs with, as the `pgops.conf` the kit writes into its
//! data directory. Pure: options and the cluster's place in, settings out.

use std::path::Path;

use crate::options::{Archive, ClusterOptions};

/// Where a cluster listens and keeps its files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place<'a> {
    /// Its TCP port on 127.0.0.1.
    pub(crate) port: u16,
    /// Its unix socket directory.
    pub(crate) socket_dir: &'a Path,
    /// Where [`Archive::LocalDir`] puts segments.
    pub(crate) archive_dir: &'a Path,
}

/// Every setting, in the order written (later ones win): the kit's, archiving, preloads, a
/// replica's `primary_conninfo`, then the options' own.
pub(crate) fn settings(
    o: &ClusterOptions,
    place: &Place<'_>,
    primary_conninfo: Option<&str>,
) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = vec![
        ("listen_addresses".into(), "127.0.0.1".into()),
        ("port".into(), place.port.to_string()),
        (
            "unix_socket_directories".into(),
            place.socket_dir.display().to_string(),
        ),
        (
            "wal_level".into(),
            format!("{:?}", o.wal_level).to_lowercase(),
        ),
        ("fsync".into(), if o.fsync { "on" } else { "off" }.into()),
        ("max_wal_senders".into(), "10".into()),
        ("max_replication_slots".into(), "10".into()),
        ("wal_keep_size".into(), "256MB".into()),
        ("hot_standby".into(), "on".into()),
        ("log_line_prefix".into(), "%m [%p] %q%u@%d ".into()),
        ("log_connections".into(), "off".into()),
    ];
    match &o.archive {
        Archive::Off => settings.push(("archive_mode".into(), "off".into())),
        Archive::Command(command) => {
            settings.push(("archive_mode".into(), "on".into()));
            settings.push(("archive_command".into(), command.clone()));
        }
        Archive::LocalDir => {
            let dir = place.archive_dir.display().to_string();
            settings.push(("archive_mode".into(), "on".into()));
            settings.push((
                "archive_command".into(),
                // Copy under a temporary name and rename, so a segment appears whole or not
                // at all, and a copy cut short by a crash is simply redone.
                format!("test ! -f '{dir}/%f' && cp '%p' '{dir}/%f.partial' && mv '{dir}/%f.partial' '{dir}/%f'"),
            ));
        }
    }
    if !o.shared_preload_libraries.is_empty() {
        settings.push((
            "shared_preload_libraries".into(),
            o.shared_preload_libraries.join(","),
        ));
    }
    if let Some(conninfo) = primary_conninfo {
        settings.push(("primary_conninfo".into(), conninfo.to_owned()));
    }
    if o.require_passwords {
        // The passwords the tests set must match the scram-sha-256 lines of pg_hba.conf;
        // PostgreSQL 13 still hashes with md5 by default.
        settings.push(("password_encryption".into(), "scram-sha-256".into()));
    }
    if o.tls {
        settings.push(("ssl".into(), "on".into()));
        settings.push(("ssl_cert_file".into(), "server.crt".into()));
        settings.push(("ssl_key_file".into(), "server.key".into()));
    }
    settings.extend(o.settings.iter().cloned());
    settings
}

/// The settings as a configuration file, every value quoted.
pub(crate) fn render(settings: &[(String, String)]) -> String {
    let mut text = String::from("# written by pgops-testkit\n");
    for (name, value) in settings {
        text.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn later_settings_win_and_values_are_quoted() {
        let options = ClusterOptions::default()
            .archive(Archive::Command("pgops wal push %p".into()))
            .preload("pg_stat_statements")
            .setting("log_min_messages", "it's");
        let (sock, archive) = (PathBuf::from("/s"), PathBuf::from("/a"));
        let place = Place {
            port: 5999,
            socket_dir: &sock,
            archive_dir: &archive,
        };
        let settings = settings(&options, &place, Some("host=p"));
        let get = |name: &str| {
            settings
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("port"), Some("5999"));
        assert_eq!(get("archive_command"), Some("pgops wal push %p"));
        assert_eq!(get("shared_preload_libraries"), Some("pg_stat_statements"));
        assert_eq!(get("primary_conninfo"), Some("host=p"));
        let text = render(&settings);
        assert!(text.contains("log_min_messages = 'it''s'\n"), "{text}");
    }
}
