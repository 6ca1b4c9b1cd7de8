//! The operating-system side of running PostgreSQL: the OS user the server runs as (never
//! root, which PostgreSQL refuses), whether that user can reach a path, and free ports.

use std::{
    ffi::OsStr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use nix::unistd::{Gid, Uid, User};

use crate::{Error, Result};

/// Who runs PostgreSQL programs: ourselves when unprivileged, or, when we are root, the
/// unprivileged `PGOPS_PG_USER` (default `postgres`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUser {
    user: Option<(String, Uid, Gid)>,
    /// Its home directory, which its programs see as `HOME` (libpq looks there for
    /// `~/.postgresql/` client certificates and `~/.pgpass`, and must not look in ours).
    home: Option<PathBuf>,
}

impl ServerUser {
    /// Ourselves when unprivileged; `PGOPS_PG_USER` (default `postgres`) when root. A root
    /// process without such a user gets an error naming the fix.
    pub fn detect() -> Result<Self> {
        if !Uid::effective().is_root() {
            return Ok(ServerUser {
                user: None,
                home: None,
            });
        }
        let name = std::env::var("PGOPS_PG_USER").unwrap_or_else(|_| "postgres".to_owned());
        let user = User::from_name(&name)
            .ok()
            .flatten()
            .filter(|u| !u.uid.is_root())
            .ok_or_else(|| Error::NoServerUser { user: name.clone() })?;
        Ok(ServerUser {
            home: Some(user.dir.clone()),
            user: Some((name, user.uid, user.gid)),
        })
    }

    /// The other user's name, when programs run as someone else than us.
    pub fn name(&self) -> Option<&str> {
        self.user.as_ref().map(|(name, _, _)| name.as_str())
    }

    /// A command that runs `program` as the server user in `cwd` (which that user can enter),
    /// with no stdin and without the caller's libpq environment.
    pub fn command(&self, program: impl AsRef<OsStr>, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd).stdin(Stdio::null());
        for var in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGPASSWORD",
            "PGSERVICE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        if let Some((_, uid, gid)) = &self.user {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        if let Some(home) = &self.home {
            cmd.env("HOME", home);
        }
        cmd
    }

    /// Gives `path` (not what is below it) to the server user.
    pub fn own(&self, path: &Path) -> Result<()> {
        if let Some((_, uid, gid)) = &self.user {
            nix::unistd::chown(path, Some(*uid), Some(*gid))
                .map_err(|e| Error::io(format!("chown {}", path.display()))(e.into()))?;
        }
        Ok(())
    }

    /// Gives `path` and everything below it to the server user.
    pub fn own_tree(&self, path: &Path) -> Result<()> {
        if self.user.is_none() {
            return Ok(());
        }
        let mut stack = vec![path.to_path_buf()];
        while let Some(p) = stack.pop() {
            self.own(&p)?;
            if p.is_dir() && !p.is_symlink() {
                for entry in std::fs::read_dir(&p)
                    .map_err(Error::io(format!("reading {}", p.display())))?
                    .flatten()
                {
                    stack.push(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Checks that the server user can run the program at `path` (every directory above it
    /// must be enterable): a checkout under a 0700 home directory is the usual trap.
    pub fn check_can_run(&self, path: &Path) -> Result<()> {
        let Some((name, _, _)) = &self.user else {
            return Ok(());
        };
        let status = self
            .command("/bin/sh", Path::new("/"))
            .arg("-c")
            .arg(r#"test -x "$1""#)
            .arg("pgops-check")
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(Error::io(
                "checking what the server's OS user can run (/bin/sh)",
            ))?;
        if status.success() {
            return Ok(());
        }
        let blocking = path
            .ancestors()
            .skip(1)
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .collect::<Vec<PathBuf>>()
            .into_iter()
            .rev()
            .find(|dir| !self.can_enter(dir))
            .map_or_else(|| path.display().to_string(), |d| d.display().to_string());
        Err(Error::Unreachable {
            user: name.clone(),
            path: path.to_path_buf(),
            blocking,
        })
    }

    fn can_enter(&self, dir: &Path) -> bool {
        self.command("/bin/sh", Path::new("/"))
            .arg("-c")
            .arg(r#"cd "$1""#)
            .arg("pgops-check")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// A TCP port on 127.0.0.1 that nobody listens on right now, for a server started next.
///
/// Taken from 10000 to 19999: below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768 and up by default), where the outgoing connections
/// of every client on the machine get their local ports, so no client socket can take it
/// between our probe and the server's bind; and below 20000, where `cargo xtask dev` stacks
/// under test keep their ports across restarts. Falls back to a kernel-chosen port when the
/// ephemeral range reaches down into it.
///
/// A port is handed out once per process: a server may bind it seconds later (Patroni starts
/// each node's PostgreSQL after every port of the cluster is chosen), and until then a probe
/// would find it free again. Processes started together can keep apart with
/// `PGOPS_TEST_PORTS=<low>-<high>`, a part of the range each (`cargo xtask ci` gives each of
/// its lanes one).
pub fn free_port() -> Result<u16> {
    use std::{collections::HashSet, sync::Mutex};
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let (lowest, highest) = port_range();
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > highest {
        let span = u32::from(highest - lowest) + 1;
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let given = given.get_or_insert_with(HashSet::new);
        // Half the range handed out: start over rather than probe a crowded range.
        if given.len() as u32 > span / 2 {
            given.clear();
        }
        let mut next = port_seed() % span;
        for _ in 0..200 {
            // A prime step walks the range without repeating soon.
            next = (next + 7_919) % span;
            let port = lowest + u16::try_from(next).expect("span fits in u16");
            if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return Ok(port);
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(Error::io("finding a free port on 127.0.0.1"))
}

/// 10000 to 19999, or the part of it `PGOPS_TEST_PORTS` names (`12000-13999`).
fn port_range() -> (u16, u16) {
    parse_port_range(std::env::var("PGOPS_TEST_PORTS").ok().as_deref())
}

fn parse_port_range(range: Option<&str>) -> (u16, u16) {
    const LOWEST: u16 = 10_000;
    const HIGHEST: u16 = 19_999;
    range
        .and_then(|range| {
            let (low, high) = range.split_once('-')?;
            Some((low.trim().parse().ok()?, high.trim().parse().ok()?))
        })
        .filter(|&(low, high): &(u16, u16)| LOWEST <= low && low < high && high <= HIGHEST)
        .unwrap_or((LOWEST, HIGHEST))
}

/// Differs between processes and between calls, so that test processes started together do
/// not probe the same ports in the same order.
fn port_seed() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = nanos
        ^ std::process::id().wrapping_mul(2_654_435_761)
        ^ CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(40_503);
    mixed.wrapping_mul(2_246_822_519).rotate_left(13)
}

#[cfg(test)]
mod tests {
    use super::{free_port, parse_port_range};

    #[test]
    fn a_part_of_the_port_range_is_taken_only_inside_it() {
        assert_eq!(parse_port_range(Some("12000-13999")), (12_000, 13_999));
        for outside in ["5000-6000", "19000-25000", "13000-12000", "12000", "a-b"] {
            assert_eq!(
                parse_port_range(Some(outside)),
                (10_000, 19_999),
                "{outside}"
            );
        }
        assert_eq!(parse_port_range(None), (10_000, 19_999));
    }

    #[test]
    fn free_ports_are_below_the_ephemeral_range_and_bindable() {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let ports: Vec<u16> = (0..20).map(|_| free_port().unwrap()).collect();
        for port in &ports {
            assert!(*port < low, "port {port} is inside the ephemeral range");
            assert!(
                *port < 20_000,
                "port {port} is where dev stacks under test live"
            );
            std::net::TcpListener::bind(("127.0.0.1", *port)).unwrap();
        }
        // Never the same port twice in a process: a server may bind it much later.
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "ports repeat: {ports:?}");
    }
}
