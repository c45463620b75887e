//! `sluice serve` as a child process, for the end-to-end tests of the control plane, and
//! the `sluice` client pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Env, free_port, http_get, sluice_binary};

/// `sluice serve` as a child process; killed (SIGKILL) on drop.
pub struct Serve {
    child: Child,
    log: PathBuf,
    pub port: u16,
}

impl Serve {
    /// Starts `sluice serve --data DATA --listen 127.0.0.1:<a free port>` with the S3
    /// credentials of `env`, plus the flags and environment `configure` adds; its stderr
    /// goes to `DATA.<tag>.log`.
    pub fn start(env: &Env, data: &Path, tag: &str, configure: impl FnOnce(&mut Command)) -> Serve {
        let port = free_port();
        let log = data.with_extension(format!("{tag}.log"));
        let mut command = Command::new(sluice_binary());
        command
            .arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("SLUICE_LOG", "info")
            .env("AWS_ACCESS_KEY_ID", &env.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &env.secret_key)
            .env("AWS_REGION", &env.region);
        configure(&mut command);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sluice serve");
        Serve { child, log, port }
    }

    /// Starts `sluice serve` on `work/data` with the token file `work/tokens` holding
    /// `tokens` (`NAME:ROLE:TOKEN` lines), and waits until it is healthy.
    pub async fn with_tokens(env: &Env, work: &Path, tokens: &str) -> Serve {
        let file = work.join("tokens");
        std::fs::write(&file, tokens).unwrap();
        let mut serve = Serve::start(env, &work.join("data"), "serve", |command| {
            command.arg("--tokens").arg(&file);
        });
        serve.wait_healthy().await;
        serve
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the server has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (60 s at most) until `/healthz` answers; panics with the logs if the server
    /// exits or does not answer.
    pub async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("serve exited with {status}; logs:\n{}", self.logs());
            }
            if http_get(self.port, "/healthz").await.as_deref() == Some("ok\n") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "serve not healthy; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `sluice ARGS… --server URL` with `token`, as a command to run.
    pub fn command(&self, token: &str, args: &[&str]) -> Command {
        let mut command = Command::new(sluice_binary());
        command
            .args(args)
            .arg("--server")
            .arg(self.url())
            .env("SLUICE_TOKEN", token)
            .env("SLUICE_LOG", "warn");
        command
    }

    /// `sluice ARGS… --server URL` with `token`, run to its end.
    pub fn cli(&self, token: &str, args: &[&str]) -> Output {
        self.command(token, args)
            .output()
            .expect("run the sluice cli")
    }

    /// The JSON `sluice ARGS… --json` prints with `token`; the command must succeed.
    pub fn json(&self, token: &str, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let output = self.cli(token, &args);
        assert!(
            output.status.success(),
            "sluice {args:?}: {}\n{}\nserve logs:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            self.logs()
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// `sluice deploy JOB ARGS…` with `token`, which must succeed.
    pub fn deploy_ok(&self, token: &str, job: &Path, args: &[&str]) {
        let mut all = vec!["deploy", job.to_str().unwrap()];
        all.extend_from_slice(args);
        let deployed = self.cli(token, &all);
        assert!(
            deployed.status.success(),
            "{}",
            String::from_utf8_lossy(&deployed.stderr)
        );
    }

    /// The body of `GET PATH` with `header` (e.g. a bearer token or a cookie).
    pub async fn get_text(&self, path: &str, header: (&str, &str)) -> String {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        http.get(format!("{}{path}", self.url()))
            .header(header.0, header.1)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and waits (60 s at most) for the server to drain and exit.
    pub fn terminate(&mut self) -> ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the server process has exited (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL database of its own for one test's registry, made on the server
/// `SLUICE_TEST_POSTGRES_URL` points at (default: the local one) and dropped, with
/// whatever still holds it open, when this goes out of scope.
pub struct ScratchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// Creates a database named after `prefix` and a unique suffix.
    pub fn create(prefix: &str) -> ScratchDatabase {
        let admin_url = std::env::var("SLUICE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".to_owned());
        let name = super::unique(prefix).replace('-', "_");
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        let database = ScratchDatabase {
            admin_url,
            name,
            url,
        };
        database.psql(&format!("CREATE DATABASE {}", database.name));
        database
    }

    /// The database's URL, for `--registry`.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn psql(&self, sql: &str) {
        let status = Command::new("psql")
            .arg(&self.admin_url)
            .args(["-v", "ON_ERROR_STOP=1", "-qc", sql])
            .status()
            .expect("run psql");
        assert!(status.success(), "psql {sql}");
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.admin_url)
            .args(["-qc", &format!("DROP DATABASE {} WITH (FORCE)", self.name)])
            .status();
    }
}
