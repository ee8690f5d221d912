//! Test support shared by the integration tests that need real components: a tansu broker
//! (installed into `.tools/bin` by `scripts/setup.sh`; memory or durable sqlite engine) on a
//! free loopback port, restartable and stopped on drop; and variants of the checkout module.
#![allow(
    clippy::panic,
    reason = "test support: a broker that cannot start fails the test that asked for it"
)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running tansu broker; killed when dropped. [`Broker::start`] uses the memory engine (fast
/// to start, loses everything on restart); [`Broker::start_durable`] the sqlite engine, whose
/// data survives [`Broker::restart`].
pub struct Broker {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    binary: PathBuf,
    engine: String,
    // The sqlite database lives here (the engine's path is relative to the working directory).
    dir: Option<tempfile::TempDir>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tool(env: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../.tools/bin")
            .join(name)
    });
    assert!(
        path.exists(),
        "{name} not found at {}: run scripts/setup.sh --for-tests",
        path.display()
    );
    path
}

/// A free loopback port (bound, then released).
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

impl Broker {
    /// Starts a broker on the memory engine and waits until it accepts connections.
    #[must_use]
    pub fn start() -> Broker {
        Broker::launch(tool("FLAGFORGE_TANSU", "tansu"), "memory://tansu/", None)
    }

    /// Starts a broker on the durable sqlite engine, in a fresh temporary directory.
    #[must_use]
    pub fn start_durable() -> Broker {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        Broker::launch(
            tool("FLAGFORGE_TANSU_SQLITE", "tansu-sqlite"),
            "sqlite://tansu.db",
            Some(dir),
        )
    }

    fn launch(binary: PathBuf, engine: &str, dir: Option<tempfile::TempDir>) -> Broker {
        let mut broker = Broker {
            child: None,
            addr: format!("127.0.0.1:{}", free_port()),
            binary,
            engine: engine.to_owned(),
            dir,
        };
        broker.resume();
        broker
    }

    /// The durable engine's sqlite database (`None` on the memory engine): tests that play
    /// an attacker with access to the broker's storage edit it while the broker is stopped.
    #[must_use]
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("tansu.db"))
    }

    /// Whether the broker process is running.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the broker process (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same address (and, for the durable engine, the same
    /// data); waits until it accepts connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the broker is already running");
        let url = format!("tcp://{}", self.addr);
        let mut cmd = Command::new(&self.binary);
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", &self.engine])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir.path());
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&self.addr).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops and starts the broker.
    pub fn restart(&mut self) {
        self.stop();
        self.resume();
    }
}

/// The checkout example module; with `kill_switch_in_france` the v3 fraud engine is also
/// switched off in France (a second, different version).
#[must_use]
pub fn checkout_module(kill_switch_in_france: bool) -> Vec<u8> {
    flagforge_compiler::compile_path_edited(&rules_examples::dir("checkout"), |_, text| {
        if kill_switch_in_france {
            text.replace(
                "when: 'market == \"IT\"'",
                "when: 'market in [\"IT\", \"FR\"]'",
            )
        } else {
            text
        }
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .module
}

/// A snapshot directory with one signed envelope, and the public key file that verifies it.
pub struct Seeded {
    /// Owns both (removed on drop).
    pub root: tempfile::TempDir,
    /// The snapshot directory (`ROOT/snapshots`).
    pub snapshots: std::path::PathBuf,
    /// The signer's public key file (`ROOT/flagforge.pub`).
    pub key_file: std::path::PathBuf,
    /// The signer, for signing later versions.
    pub key: flagforge_distribution::KeyPair,
}

/// `module` as version 1 of `ruleset`, signed by a new key, in a new snapshot directory: what
/// an embedded host needs to serve without a broker.
pub fn seeded_snapshot(ruleset: &str, module: Vec<u8>) -> Seeded {
    use flagforge_distribution::{Draft, Envelope, KeyPair, SnapshotDir};
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
    let key_file = root.path().join("flagforge.pub");
    std::fs::write(&key_file, key.public().to_text()).unwrap_or_else(|e| panic!("{e}"));
    let snapshots = root.path().join("snapshots");
    let env = Envelope::sign(
        Draft {
            ruleset: ruleset.into(),
            version: 1,
            module,
            created_at: "2026-11-28T10:00:00Z".into(),
            ..Draft::default()
        },
        &key,
    );
    SnapshotDir::open(&snapshots)
        .and_then(|s| s.store(&env))
        .unwrap_or_else(|e| panic!("snapshot: {e}"));
    Seeded {
        root,
        snapshots,
        key_file,
        key,
    }
}
