//! What the faults need besides Redis: a private PostgreSQL that can be restarted in place
//! (Debian's server binaries, `initdb` in a directory under the target directory, a free
//! loopback port, trust auth, no fsync; as root it runs as the `postgres` account), and the
//! wait for every node's `/readyz` to answer 200 again (read with `bench::probe`).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::probe::get;

/// A private PostgreSQL.
pub(crate) struct Postgres {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    user: Option<(u32, u32)>,
}

impl Postgres {
    /// Initialises and starts one on a free port under `log_dir`.
    pub(crate) fn start(log_dir: &Path) -> Result<Self, String> {
        let bin = bin_dir()?;
        let user = run_as();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for postgres: {e}"))?
            .port();
        let dir = log_dir.join(format!("postgres-{port}"));
        let _stale = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("cannot give {} to postgres: {e}", dir.display()))?;
        }
        let initdb = command(&bin.join("initdb"), user)
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .map_err(|e| format!("cannot run initdb ({e}); install Debian's postgresql"))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr).trim()
            ));
        }
        let mut postgres = Postgres {
            child: None,
            port,
            dir,
            bin,
            user,
        };
        postgres.spawn()?;
        Ok(postgres)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = command(&self.bin.join("postgres"), self.user)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .spawn()
            .map_err(|e| format!("cannot run postgres: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "postgres did not listen on {} within 30 s",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops it with a fast shutdown (SIGINT: sessions are ended, nothing is lost), keeps it
    /// down for `down_for`, and starts it again on the same port and data.
    pub(crate) fn restart(&mut self, down_for: Duration) -> Result<(), String> {
        self.shut_down();
        std::thread::sleep(down_for);
        self.spawn()
    }

    fn shut_down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _sent = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _killed = child.kill();
            let _reaped = child.wait();
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it and removes its directory.
    pub(crate) fn stop(&mut self) {
        self.shut_down();
        let _removed = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A small volume (a 64 MiB tmpfs mounted under the target directory; mounting needs root)
/// for SQLite files, which [`fill`](Self::fill) fills up to the last byte.
pub(crate) struct SmallVolume {
    dir: PathBuf,
    mounted: bool,
}

impl SmallVolume {
    /// Mounts one under `log_dir`.
    pub(crate) fn mount(log_dir: &Path) -> Result<Self, String> {
        let dir = log_dir.join(format!("small-volume-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !mounted.success() {
            return Err(format!(
                "cannot mount a 64 MiB tmpfs on {} ({mounted}): the sqlite-full fault needs root",
                dir.display()
            ));
        }
        Ok(SmallVolume { dir, mounted: true })
    }

    /// Where it is mounted.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// Writes a file (on from where it ends) until the volume has no byte left.
    pub(crate) fn fill(&mut self) -> Result<(), String> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .map_err(|e| format!("cannot open the filler: {e}"))?;
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                // ENOSPC: full.
                Err(e) if e.raw_os_error() == Some(28) => return Ok(()),
                Err(e) => return Err(format!("filling the volume failed: {e}")),
            }
        }
    }

    /// Removes the filler.
    pub(crate) fn free(&mut self) {
        let _removed = std::fs::remove_file(self.filler());
    }

    /// Unmounts it and removes its directory.
    pub(crate) fn unmount(&mut self) {
        if self.mounted {
            let _unmounted = Command::new("umount").arg(&self.dir).status();
            self.mounted = false;
        }
        let _removed = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// The newest installed server's `bin` directory.
fn bin_dir() -> Result<PathBuf, String> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| {
            format!(
                "no PostgreSQL server in {} ({e}); install Debian's postgresql",
                root.display()
            )
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| "no PostgreSQL server binaries; install Debian's postgresql".to_owned())
}

/// The `postgres` account's uid and gid when running as root (the server refuses root).
fn run_as() -> Option<(u32, u32)> {
    let me = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = me.lines().find(|l| l.starts_with("Uid:"))?;
    if uid.split_whitespace().nth(1)? != "0" {
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

fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(program);
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command.stdout(Stdio::null()).stderr(Stdio::null());
    command
}

/// Readiness after a fault: how long until every node's `/readyz` answered 200 again, and
/// whether one was seen not ready (the fault reached the nodes).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Readiness {
    /// From the fault to all ready, or `None` when they were not within 60 s.
    pub(crate) after: Option<Duration>,
    /// Whether a node answered other than 200 meanwhile.
    pub(crate) saw_unready: bool,
}

/// Polls every node's `/readyz` (from `since`, the fault) until all answer 200.
/// `seen_unready`: a node was already seen not ready (the wait then ends at the first time
/// all are ready).
pub(crate) fn until_ready(addrs: &[String], since: Instant, seen_unready: bool) -> Readiness {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut readiness = Readiness {
        after: None,
        saw_unready: seen_unready,
    };
    while Instant::now() < deadline {
        let ready = addrs
            .iter()
            .filter(|a| matches!(get(a, "/readyz"), Some((200, _))))
            .count();
        // Right after the fault the nodes may still say ready: only a return to ready after
        // a node said otherwise counts (or 10 s of ready, for a fault they never noticed).
        let settled = readiness.saw_unready || since.elapsed() > Duration::from_secs(10);
        if ready == addrs.len() && settled {
            readiness.after = Some(since.elapsed());
            return readiness;
        }
        readiness.saw_unready |= ready < addrs.len();
        std::thread::sleep(Duration::from_millis(20));
    }
    readiness
}
