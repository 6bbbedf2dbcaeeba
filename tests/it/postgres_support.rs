//! A private PostgreSQL per test: `initdb` in a temp dir, `postgres` on a free loopback port
//! with no durability (fsync off), trust auth. Stopped and removed on drop. As root (CI), the
//! server runs as the `postgres` user, which Debian's package creates.
//!
//! [`PostgresServer::start_tls`] accepts TCP connections over TLS only (`hostssl`), with a
//! certificate the test made.
//!
//! The tests need Debian's PostgreSQL server (`.ci/run` installs it when missing).

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running private PostgreSQL.
pub struct PostgresServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

/// The newest installed server's `bin` directory.
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| {
            panic!("no PostgreSQL server in {root:?} ({e}); install Debian's postgresql package")
        })
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL server binaries; install Debian's postgresql package")
}

/// The `postgres` account's uid and gid, when running as root (the server refuses root).
fn run_as() -> Option<(u32, u32)> {
    let me = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid_line = me.lines().find(|l| l.starts_with("Uid:"))?;
    if uid_line.split_whitespace().nth(1)? != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let fields: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))?
        .split(':')
        .collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

fn command(program: PathBuf, user: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(program);
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command.stdout(Stdio::null()).stderr(Stdio::null());
    command
}

impl PostgresServer {
    /// Initialises and starts a server on a free port; panics with what to install if it
    /// cannot.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Like [`PostgresServer::start`], but TCP clients must speak TLS: the server presents
    /// `certificates`' `server.pem` (key `server.key`, made by `mcp_https::certificates`), and
    /// `pg_hba.conf` has only a `hostssl` line for loopback.
    pub fn start_tls(certificates: &Path) -> Self {
        Self::start_with(Some((certificates, false)))
    }

    /// Like [`PostgresServer::start_tls`], but TCP clients must also show a certificate signed
    /// by `certificates`' `ca.pem` (`clientcert=verify-ca`).
    pub fn start_mtls(certificates: &Path) -> Self {
        Self::start_with(Some((certificates, true)))
    }

    /// `tls`: the certificates' directory, and whether clients need a certificate too.
    fn start_with(tls: Option<(&Path, bool)>) -> Self {
        // The free port is found by binding and letting go, so another test's server may take
        // it first; then this postgres exits at once, and what answers on the port is not a
        // database. Such a start is seen (the child has exited) and tried again on another port.
        for _ in 0..5 {
            if let Some(server) = Self::try_start(tls) {
                return server;
            }
        }
        panic!("postgres did not start in 5 tries (initdb or the server failed; see above)");
    }

    fn try_start(tls: Option<(&Path, bool)>) -> Option<Self> {
        let bin = bin_dir();
        let user = run_as();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // Unique even when the OS hands the same free port to two tests in a row.
        let dir = std::env::temp_dir().join(format!(
            "agent-it-pg-{}-{port}-{}",
            std::process::id(),
            core_context::RunId::generate().as_str()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the temp dir");
        }
        let data = dir.join("data");
        let status = command(bin.join("initdb"), user)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .expect("run initdb");
        if !status.status.success() {
            // Say why, and try again (the loop above gives up after 5 tries).
            eprintln!(
                "initdb failed in {dir:?}: {}",
                String::from_utf8_lossy(&status.stderr)
            );
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        let mut postgres = command(bin.join("postgres"), user);
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(&dir)
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        if let Some((certificates, client_certificates)) = tls {
            postgres.args(tls_options(certificates, client_certificates, &data, user));
        }
        let child = postgres.spawn().expect("run postgres");
        let mut server = Self {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let exited = server
                .child
                .as_mut()
                .is_some_and(|child| !matches!(child.try_wait(), Ok(None)));
            if exited {
                // Dropping it removes its directory.
                return None;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Listening, and still ours: a postgres that lost the port exits within moments.
        std::thread::sleep(Duration::from_millis(50));
        let alive = server
            .child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)));
        alive.then_some(server)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

/// Copies the server's certificate and key (and the CA) next to its data (the key readable by
/// the server's account only, as PostgreSQL demands), allows TCP clients over TLS only (with a
/// certificate the CA signed, when `client_certificates`), and returns the `-c` options that
/// turn TLS on.
fn tls_options(
    certificates: &Path,
    client_certificates: bool,
    data: &Path,
    user: Option<(u32, u32)>,
) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    for file in ["server.pem", "server.key", "ca.pem"] {
        let copy = data.join(file);
        std::fs::copy(certificates.join(file), &copy).expect("copy the certificate");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&copy, Some(uid), Some(gid)).expect("chown the certificate");
        }
    }
    let client = if client_certificates {
        " clientcert=verify-ca"
    } else {
        ""
    };
    std::fs::write(
        data.join("pg_hba.conf"),
        format!("local all all trust\nhostssl all all 127.0.0.1/32 trust{client}\n"),
    )
    .expect("write pg_hba.conf");
    [
        "ssl=on",
        "ssl_cert_file=server.pem",
        "ssl_key_file=server.key",
        "ssl_ca_file=ca.pem",
    ]
    .iter()
    .flat_map(|option| ["-c".to_owned(), (*option).to_owned()])
    .collect()
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
