//! An S3-compatible server for tests: moto's `moto_server`, which `cargo xtask install` puts
//! in `target/pgops-tools/venv`, with one bucket, `backups`. Stopped when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{Error, Result};

/// A running `moto_server` on 127.0.0.1 with the bucket `backups`.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    endpoint: String,
}

impl S3Server {
    /// Starts moto on a free port and creates the bucket `backups`.
    pub fn start() -> Result<S3Server> {
        let program = moto_server();
        let port = pgops_pg::free_port()?;
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Tool {
                program: program.display().to_string(),
                status: e.to_string(),
                output: "moto_server is needed for the S3 tests: `cargo xtask install` puts it \
                         in target/pgops-tools/venv"
                    .into(),
            })?;
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        for _ in 0..100 {
            if agent
                .put(&format!("{}/backups", server.endpoint))
                .send_empty()
                .is_ok_and(|r| r.status().as_u16() == 200)
            {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::Timeout {
            what: format!("moto_server on {}", server.endpoint),
            waited: Duration::from_secs(10),
        })
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The variables a client needs: moto takes any credentials.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto's server: where `cargo xtask install` puts it (target/pgops-tools/venv), else PATH.
fn moto_server() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let venv = target.join("pgops-tools/venv/bin/moto_server");
    if venv.is_file() {
        venv
    } else {
        "moto_server".into()
    }
}
