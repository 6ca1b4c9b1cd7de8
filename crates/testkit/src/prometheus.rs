//! A real Prometheus (Debian's `prometheus`) that scrapes given targets and evaluates given
//! rule files every second, for tests that must see an alert as Prometheus itself sees it.
//! Runs as the server user with copies of the rule files in its own directory (a checkout
//! under root's home is not readable by that user); stopped and its directory removed when
//! dropped, or by its watchdog when the owning process goes away, however it goes.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use crate::{
    Error, Result,
    process::{self, RunAs, Watchdog},
};

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    port: u16,
    root: PathBuf,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
    agent: ureq::Agent,
}

/// An alert as Prometheus's `/api/v1/alerts` reports it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Alert {
    /// Its labels (`alertname` included).
    pub labels: BTreeMap<String, String>,
    /// `pending` (its `for` has not passed yet) or `firing`.
    pub state: String,
}

impl Prometheus {
    /// Starts Prometheus scraping `/metrics` of each `host:port` in `targets` (job `pgops`)
    /// every second, evaluating the rule files `rules` every second, and waits until it is
    /// ready.
    pub fn start(rules: &[&Path], targets: &[String]) -> Result<Prometheus> {
        let mut cfg = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n",
        );
        let mut files = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let name = format!("rules-{i}.yml");
            let _ = writeln!(cfg, "  - {{dir}}/{name}");
            files.push((name, rule.to_path_buf()));
        }
        cfg.push_str(
            "scrape_configs:\n  - job_name: pgops\n    static_configs:\n      - targets:\n",
        );
        for target in targets {
            let _ = writeln!(cfg, "          - '{target}'");
        }
        let files: Vec<(&str, &Path)> = files
            .iter()
            .map(|(name, path)| (name.as_str(), path.as_path()))
            .collect();
        Prometheus::start_with_config(&cfg, &files)
    }

    /// Starts Prometheus with the configuration `config` as given, `{dir}` in it standing for
    /// its own directory, into which each of `files` is copied under its name (rule files,
    /// credentials files), readable by the server user that runs it; waits until it is
    /// ready.
    pub fn start_with_config(config: &str, files: &[(&str, &Path)]) -> Result<Prometheus> {
        let program = process::find_tool("prometheus", "prometheus", "/usr/bin")?;
        let run_as = RunAs::detect()?;
        run_as.check_can_run(&program)?;
        let root = tempfile::Builder::new()
            .prefix("pgops-prometheus-")
            .tempdir()
            .map_err(|e| Error::io("creating a Prometheus directory", e))?
            .keep();
        run_as.own(&root)?;
        let watchdog = Watchdog::daemon(&run_as, &root, "prometheus.pid")?;
        for (name, source) in files {
            let copy = root.join(name);
            fs::copy(source, &copy)
                .map_err(|e| Error::io(format!("copying {}", source.display()), e))?;
            run_as.own(&copy)?;
        }
        let cfg = config.replace("{dir}", &root.display().to_string());
        let config = root.join("prometheus.yml");
        fs::write(&config, cfg)
            .map_err(|e| Error::io(format!("writing {}", config.display()), e))?;
        run_as.own(&config)?;
        let data = root.join("data");
        fs::create_dir(&data).map_err(|e| Error::io(format!("creating {}", data.display()), e))?;
        run_as.own(&data)?;
        let port = pgops_pg::free_port()?;
        let log = fs::File::create(root.join("prometheus.log"))
            .map_err(|e| Error::io("creating Prometheus's log", e))?;
        let mut cmd = run_as.command(&program, &root);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", program.display()), e))?;
        let pid = root.join("prometheus.pid");
        fs::write(&pid, child.id().to_string())
            .map_err(|e| Error::io(format!("writing {}", pid.display()), e))?;
        let prometheus = Prometheus {
            port,
            root,
            child: Some(child),
            watchdog: Some(watchdog),
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .http_status_as_error(false)
                .build()
                .into(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = prometheus
                .agent
                .get(format!("{}/-/ready", prometheus.url()))
                .call()
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return Ok(prometheus);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "Prometheus to be ready; its log: {}",
                        process::tail(&prometheus.root.join("prometheus.log"), 20)
                    ),
                    waited: Duration::from_secs(30),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The alerts it holds now, pending and firing.
    pub fn alerts(&self) -> Result<Vec<Alert>> {
        #[derive(serde::Deserialize)]
        struct Data {
            alerts: Vec<Alert>,
        }
        Ok(self.api::<Data>("alerts", &[])?.alerts)
    }

    /// The names of the alerting and recording rules it loaded, group by group.
    pub fn rule_names(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Rule {
            name: String,
        }
        #[derive(serde::Deserialize)]
        struct Group {
            rules: Vec<Rule>,
        }
        #[derive(serde::Deserialize)]
        struct Data {
            groups: Vec<Group>,
        }
        Ok(self
            .api::<Data>("rules", &[])?
            .groups
            .into_iter()
            .flat_map(|g| g.rules.into_iter().map(|r| r.name))
            .collect())
    }

    /// The series an instant PromQL query returns now: each one's labels and value.
    pub fn query(&self, promql: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>> {
        #[derive(serde::Deserialize)]
        struct Sample {
            metric: BTreeMap<String, String>,
            value: (f64, String),
        }
        #[derive(serde::Deserialize)]
        struct Data {
            result: Vec<Sample>,
        }
        Ok(self
            .api::<Data>("query", &[("query", promql)])?
            .result
            .into_iter()
            .map(|s| (s.metric, s.value.1.parse().unwrap_or(f64::NAN)))
            .collect())
    }

    /// `GET /api/v1/<endpoint>?<params>`: the answer's `data`.
    fn api<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        params: &[(&str, &str)],
    ) -> Result<T> {
        #[derive(serde::Deserialize)]
        struct Answer<T> {
            data: T,
        }
        let url = format!("{}/api/v1/{endpoint}", self.url());
        let failed = |e: ureq::Error| Error::io(format!("GET {url}"), std::io::Error::other(e));
        let mut request = self.agent.get(&url);
        for (name, value) in params {
            request = request.query(*name, *value);
        }
        let body = request
            .call()
            .map_err(failed)?
            .body_mut()
            .read_to_string()
            .map_err(failed)?;
        let answer: Answer<T> = serde_json::from_str(&body)
            .map_err(|e| Error::io(format!("reading {url}: {body}"), std::io::Error::other(e)))?;
        Ok(answer.data)
    }

    /// Waits up to `timeout` for an alert named `name` in `state` (`pending` or `firing`).
    pub fn wait_for_alert(&self, name: &str, state: &str, timeout: Duration) -> Result<Alert> {
        let deadline = Instant::now() + timeout;
        loop {
            let alerts = self.alerts()?;
            if let Some(alert) = alerts.iter().find(|a| {
                a.state == state && a.labels.get("alertname").map(String::as_str) == Some(name)
            }) {
                return Ok(alert.clone());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("Prometheus to hold {name} {state} (it holds {alerts:?})"),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            watchdog.finish();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
