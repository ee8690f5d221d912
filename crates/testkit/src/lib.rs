//! Test support shared by the integration tests that need real components: a tansu broker
//! (installed into `.tools/bin` by `scripts/setup.sh`) started on a free loopback port and
//! stopped on drop, and variants of the checkout example module.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flagforge_compiler::{compile_sources, SourceFile};

/// A running tansu broker (memory storage engine); killed when dropped.
pub struct Broker {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu() -> PathBuf {
    let path = std::env::var_os("FLAGFORGE_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/tansu")
        });
    assert!(
        path.exists(),
        "tansu not found at {}: run scripts/setup.sh",
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
    /// Starts a broker and waits until it accepts connections.
    #[must_use]
    pub fn start() -> Broker {
        let addr = format!("127.0.0.1:{}", free_port());
        let url = format!("tcp://{addr}");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tansu: {e}"));
        let broker = Broker { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&broker.addr).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }
}

/// The checkout example module; with `kill_switch_in_france` the v3 fraud engine is also
/// switched off in France (a second, different version).
#[must_use]
pub fn checkout_module(kill_switch_in_france: bool) -> Vec<u8> {
    let dir = rules_examples::dir("checkout");
    let files = flagforge_compiler::rule_files(&dir).unwrap_or_else(|e| panic!("{e}"));
    let sources: Vec<SourceFile> = files
        .into_iter()
        .map(|p| {
            let mut text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{e}"));
            if kill_switch_in_france {
                text = text.replace(
                    "when: 'market == \"IT\"'",
                    "when: 'market in [\"IT\", \"FR\"]'",
                );
            }
            SourceFile {
                path: p.display().to_string(),
                text,
            }
        })
        .collect();
    compile_sources(&sources)
        .unwrap_or_else(|e| panic!("{e}"))
        .module
}
