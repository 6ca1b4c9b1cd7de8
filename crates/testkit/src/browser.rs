//! A real browser for tests: Debian's headless Chromium driven through its WebDriver
//! (`chromedriver`, package `chromium-driver`), so a test reads the DOM as Chromium rendered
//! it, the browser's console, and a screenshot. Stopped when dropped.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use crate::{Error, Result};

/// The W3C WebDriver key under which an element reference comes back.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

/// One entry of the browser's console.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ConsoleEntry {
    /// `SEVERE`, `WARNING`, `INFO`, ...
    pub level: String,
    /// The message, with its source.
    pub message: String,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session (`width` x `height`
    /// window, the console recorded).
    pub fn start(width: u32, height: u32) -> Result<Browser> {
        let driver_program =
            crate::process::find_tool("chromedriver", "chromium-driver", "/usr/bin")?;
        let chromium = crate::process::find_tool("chromium", "chromium", "/usr/bin")?;
        let port = pgops_pg::free_port()?;
        let driver = Command::new(&driver_program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", driver_program.display()), e))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            agent,
        };
        let mut ready = false;
        for _ in 0..100 {
            if browser
                .call("GET", "/status", None)
                .is_ok_and(|v| v["value"]["ready"] == true)
            {
                ready = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !ready {
            return Err(Error::Timeout {
                what: format!("chromedriver on port {port}"),
                waited: Duration::from_secs(10),
            });
        }
        let created = browser.call(
            "POST",
            "/session",
            Some(json!({
                "capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium.display().to_string(),
                        // No sandbox: the kit runs as root in CI, where Chromium's sandbox
                        // cannot start; the browser only visits the test's own server.
                        "args": ["--headless", "--no-sandbox", "--disable-gpu",
                                 "--disable-dev-shm-usage", "--hide-scrollbars",
                                 format!("--window-size={width},{height}")],
                    },
                    "goog:loggingPrefs": {"browser": "ALL"},
                }}
            })),
        )?;
        browser.session = created["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| tool_error("creating a session", &created))?
            .to_owned();
        Ok(browser)
    }

    /// Navigates to `url` and waits until the page has loaded.
    pub fn open(&self, url: &str) -> Result<()> {
        self.session_call("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    /// The page's title.
    pub fn title(&self) -> Result<String> {
        Ok(self.session_call("GET", "/title", None)?["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The rendered text of every element `css` selects, in document order (what the user
    /// sees: hidden elements give empty text).
    pub fn texts(&self, css: &str) -> Result<Vec<String>> {
        let found = self.session_call(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        let mut texts = Vec::new();
        for element in found["value"].as_array().into_iter().flatten() {
            let id = element[ELEMENT]
                .as_str()
                .ok_or_else(|| tool_error("finding elements", &found))?;
            let text = self.session_call("GET", &format!("/element/{id}/text"), None)?;
            texts.push(text["value"].as_str().unwrap_or_default().to_owned());
        }
        Ok(texts)
    }

    /// How many elements `css` selects.
    pub fn count(&self, css: &str) -> Result<usize> {
        let found = self.session_call(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        Ok(found["value"].as_array().map_or(0, Vec::len))
    }

    /// The document as the browser holds it now (`document.documentElement.outerHTML`).
    pub fn dom(&self) -> Result<String> {
        let got = self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": "return document.documentElement.outerHTML;", "args": [] })),
        )?;
        Ok(got["value"].as_str().unwrap_or_default().to_owned())
    }

    /// The console entries since the last call (the browser's log, errors included: failed
    /// loads, policy violations, script errors).
    pub fn console(&self) -> Result<Vec<ConsoleEntry>> {
        let got = self.session_call("POST", "/se/log", Some(json!({ "type": "browser" })))?;
        serde_json::from_value(got["value"].clone())
            .map_err(|_| tool_error("reading the console", &got))
    }

    /// Writes a PNG screenshot of the window to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        use base64::Engine as _;
        let got = self.session_call("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(got["value"].as_str().unwrap_or_default())
            .map_err(|_| tool_error("taking a screenshot", &got))?;
        std::fs::write(path, png).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let what = format!("WebDriver {method} {path}");
        let response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
        }
        .map_err(|e| Error::Tool {
            program: "chromedriver".into(),
            status: e.to_string(),
            output: what.clone(),
        })?;
        let status = response.status().as_u16();
        let text = response
            .into_body()
            .read_to_string()
            .map_err(|e| Error::Tool {
                program: "chromedriver".into(),
                status: e.to_string(),
                output: what.clone(),
            })?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            return Err(tool_error(&what, &value));
        }
        Ok(value)
    }
}

fn tool_error(what: &str, answer: &Value) -> Error {
    Error::Tool {
        program: "chromedriver".into(),
        status: what.to_owned(),
        output: answer.to_string(),
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
