//! A private nginx (Debian's package) for the load balancer tests: its own prefix, pid file,
//! logs and temp dirs in a temp dir, one worker, in the foreground, on a free port, with the
//! configuration `docs/operations.md` gives (the one `nginx` code block, in "Behind a load
//! balancer (nginx)", read from the guide so the two cannot drift: only the nodes' addresses
//! and the listening port are replaced). Stopped on drop.
//!
//! The tests need Debian's `nginx` (`.ci/run` installs it when missing); none uses the system
//! service.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The node addresses and the listening line in the guide's configuration, replaced here.
const DOC_NODES: [&str; 2] = ["10.0.0.11:8080", "10.0.0.12:8080"];
const DOC_LISTEN: &str = "listen 80;";

/// The nginx configuration `docs/operations.md` gives: its only `nginx` code block.
fn documented_config() -> String {
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md");
    let guide = std::fs::read_to_string(guide).unwrap();
    let section = guide
        .split_once("\n## Behind a load balancer (nginx)\n")
        .expect("docs/operations.md has a section \"Behind a load balancer (nginx)\"")
        .1;
    let blocks: Vec<&str> = guide.split("\n```nginx\n").skip(1).collect();
    assert_eq!(
        blocks.len(),
        1,
        "docs/operations.md should have exactly one ```nginx block"
    );
    let block = blocks[0]
        .split_once("\n```\n")
        .expect("the ```nginx block ends")
        .0;
    assert!(
        section.contains(block),
        "the ```nginx block is in the section \"Behind a load balancer (nginx)\""
    );
    format!("{block}\n")
}

/// The guide's configuration with `nodes` as its upstream and listening on `port`.
fn site(nodes: [SocketAddr; 2], port: u16) -> String {
    let mut text = documented_config();
    let mut swaps: Vec<(&str, String)> = DOC_NODES
        .iter()
        .zip(nodes)
        .map(|(doc, node)| (*doc, node.to_string()))
        .collect();
    swaps.push((DOC_LISTEN, format!("listen 127.0.0.1:{port};")));
    for (from, to) in swaps {
        assert_eq!(
            text.matches(from).count(),
            1,
            "the guide's ```nginx block should name `{from}` once (this test replaces it)"
        );
        text = text.replace(from, &to);
    }
    text
}

fn binary() -> PathBuf {
    let debian = Path::new("/usr/sbin/nginx");
    if debian.exists() {
        return debian.to_owned();
    }
    match Command::new("nginx").arg("-v").output() {
        Ok(_) => PathBuf::from("nginx"),
        Err(e) => panic!(
            "cannot run nginx ({e}): these tests need Debian's nginx (apt-get install nginx); \
             .ci/run installs it when missing"
        ),
    }
}

/// A private nginx: its own prefix, pid file, logs and temp dirs in a temp dir, one worker,
/// in the foreground. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx in front of `nodes` on a free port; panics with its log if it cannot.
    pub fn start(nodes: [SocketAddr; 2]) -> Self {
        let binary = binary();
        for attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("no free port on loopback")
                .port();
            let dir = std::env::temp_dir().join(format!(
                "agent-it-nginx-{}-{port}-{attempt}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            std::fs::write(dir.join("agent-server.conf"), site(nodes, port)).unwrap();
            std::fs::write(dir.join("nginx.conf"), main_config(&dir)).unwrap();
            let child = Command::new(&binary)
                .arg("-p")
                .arg(&dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .args(["-g", "daemon off;"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let mut nginx = Nginx {
                child,
                dir,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            match nginx.wait_listening() {
                Ok(()) => return nginx,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("nginx did not start:\n{log}"),
            }
        }
        panic!("could not start nginx on a free port");
    }

    /// Waits until it takes connections; its logs if it exited or did not within 10 s.
    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(self.logs());
            }
            if TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(self.logs())
    }

    fn logs(&self) -> String {
        ["stderr.log", "error.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What `nginx.conf` says outside the site's file: the process (one worker, its files in
/// `dir`) and the http block that includes the site, as Debian's includes `conf.d/*.conf`.
fn main_config(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "worker_processes 1;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         \x20   access_log {dir}/access.log;\n\
         \x20   client_body_temp_path {dir}/client_body;\n\
         \x20   proxy_temp_path {dir}/proxy;\n\
         \x20   fastcgi_temp_path {dir}/fastcgi;\n\
         \x20   uwsgi_temp_path {dir}/uwsgi;\n\
         \x20   scgi_temp_path {dir}/scgi;\n\
         \x20   include {dir}/agent-server.conf;\n\
         }}\n"
    )
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM: the master stops its worker, then exits (a master killed with SIGKILL
            // could not stop it).
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
