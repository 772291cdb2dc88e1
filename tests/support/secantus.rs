//! A real MongoDB-wire server for tests: SecantusDB (`secantusd-py`), installed by
//! `scripts/install-test-servers.sh` into the project's venv.
//!
//! Each test starts its own server on a free loopback port with a storage directory of
//! its own, so tests never share data and may run in parallel. The server is killed and
//! its directory removed when the [`Secantus`] is dropped. A missing venv fails the test
//! (never skips it): run `scripts/test.sh`, which installs it.
//!
//! Include it with `#[path = "support/secantus.rs"] mod secantus;`.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to listen: about 1.5 s on an idle machine, much more while
/// other builds load it.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The venv of `scripts/install-test-servers.sh`, by the same rule.
pub fn venv_dir() -> PathBuf {
    let cache = std::env::var_os("SLUICE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
                })
                .join("sluice")
        });
    cache.join("venv")
}

fn server_binary() -> PathBuf {
    let binary = venv_dir().join("bin/secantusd-py");
    assert!(
        binary.is_file(),
        "SecantusDB is not installed ({} is missing): run scripts/test.sh, or \
         scripts/install-test-servers.sh, to install the test servers",
        binary.display()
    );
    binary
}

/// A running SecantusDB of this test's own.
pub struct Secantus {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Secantus {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-secantus-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        // An empty config file: the server would otherwise pick up a secantusd.toml from
        // the working directory or the home directory.
        std::fs::write(dir.join("secantusd.toml"), "").expect("write an empty config");
        let mut server = Self {
            child: None,
            port,
            dir,
        };
        server.restart();
        server
    }

    /// `mongodb://127.0.0.1:<port>`.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: no goodbye to clients, as in a crash). Its data stays
    /// in its directory for [`Secantus::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, on the same data; waits until it listens.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::create(self.dir.join("server.log")).expect("create the log");
        let child = Command::new(server_binary())
            .arg("--config")
            .arg(self.dir.join("secantusd.toml"))
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--storage-path")
            .arg(self.dir.join("data"))
            .args(["--log-level", "WARNING"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("start secantusd-py");
        self.child = Some(child);
        self.wait_until_listening();
    }

    fn wait_until_listening(&mut self) {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "secantusd-py exited ({status}) before listening on port {}:\n{}",
                    self.port,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "secantusd-py did not listen on port {} within {START_TIMEOUT:?}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Secantus {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
