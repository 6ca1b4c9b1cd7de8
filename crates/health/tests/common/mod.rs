//! What the health tests share: reading an exposition, a runtime, and serving an exporter
//! over real HTTP.
#![allow(dead_code, clippy::unwrap_used)]

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use pgops_health::{Exporter, server};

pub type Labels = BTreeMap<String, String>;

/// Samples of an exposition text: (name, labels, value); checks one HELP and TYPE per name.
pub fn parse(text: &str) -> Vec<(String, Labels, f64)> {
    let mut out = Vec::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap().to_owned();
            assert!(typed.insert(name.clone()), "{name} has two TYPE lines");
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let mut labels = Labels::new();
                for pair in rest.trim_end_matches('}').split("\",") {
                    let (k, v) = pair.split_once("=\"").unwrap();
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), Labels::new()),
        };
        let value = if value == "NaN" {
            f64::NAN
        } else {
            value.parse().unwrap()
        };
        out.push((name, labels, value));
    }
    out
}

pub fn value(samples: &[(String, Labels, f64)], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, labels, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn get(agent: &ureq::Agent, url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

pub fn serve(
    rt: &tokio::runtime::Runtime,
    exporter: Exporter,
    token: Option<&str>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = rt
        .block_on(server::bind("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let token = token.map(str::to_owned);
    rt.spawn(server::serve_on(
        listener,
        Arc::new(exporter),
        token,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}
