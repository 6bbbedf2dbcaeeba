//! An MCP server over HTTPS (`--mcp-server NAME=https://…`): the reference "everything" server
//! behind a TLS front (`tests/mcp-servers/tls-proxy.mjs`) whose certificate, for 127.0.0.1, a
//! private CA made here with `openssl` signed. With that CA among the trusted roots
//! (`SSL_CERT_FILE`, which the MCP client's TLS reads, as an operator with a private CA sets
//! it) the server's tools are listed and called; with the machine's roots only, the server is
//! refused for its certificate, and a call of its tool says so.
//!
//! Each side runs in a child process (this test binary again) so each has its own
//! environment.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use agent_registry::ToolSet;
use mcp_tools::{McpServerSpec, McpTools};
use serde_json::json;

use crate::mcp::{http_everything, servers};

/// The child's MCP server URL; without it the child test has nothing to do.
const CHILD_URL: &str = "AGENT_IT_MCP_HTTPS_URL";
/// Where a child's answer starts and ends in its output (the test harness prints around it).
pub(crate) const BEGIN: &str = "---- https child ----";
pub(crate) const END: &str = "---- end ----";

/// Runs `openssl ARGS` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (Debian's openssl package)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// openssl's options for a new P-256 key, unencrypted.
const NEW_EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A private CA (`ca.pem`), a certificate it signed for 127.0.0.1 (`server.pem`,
/// `server.key`) and a client certificate it signed (`client.pem`, `client.key`, CN
/// `agent-node`), in `dir`. The data stores' TLS tests (`data_tls`) use them too.
pub(crate) fn certificates(dir: &Path) {
    let ca = [
        "req", "-x509", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
    ];
    let ca_name = ["-subj", "/CN=agent-it test CA"];
    let ca_ext = [
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ];
    openssl(dir, &[&ca[..], &NEW_EC_KEY, &ca_name, &ca_ext].concat());
    sign(
        dir,
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    sign(
        dir,
        "client",
        "/CN=agent-node",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
}

/// A new P-256 key `NAME.key` and a certificate `NAME.pem` for `subject` with the extensions
/// `extensions`, signed by the CA in `dir`.
fn sign(dir: &Path, name: &str, subject: &str, extensions: &str) {
    let (key, csr, ext, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
        format!("{name}.pem"),
    );
    let request = ["req", "-keyout", &key, "-out", &csr, "-subj", subject];
    openssl(dir, &[&request[..], &NEW_EC_KEY].concat());
    std::fs::write(dir.join(&ext), extensions).unwrap();
    let ca = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"];
    let x509 = [
        "x509", "-req", "-in", &csr, "-out", &pem, "-days", "2", "-extfile", &ext,
    ];
    openssl(dir, &[&x509[..], &ca].concat());
}

/// The TLS front, stopped (and its directory removed) on drop.
pub(crate) struct TlsFront {
    pub(crate) dir: PathBuf,
    proxy: Child,
    pub(crate) url: String,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.proxy.kill();
        let _ = self.proxy.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves `target` (`http://127.0.0.1:PORT/mcp`) at `https://127.0.0.1:PORT2/mcp`.
pub(crate) fn tls_front(target: &str) -> TlsFront {
    let dir =
        std::env::temp_dir().join(format!("agent-it-tls-{}", core_context::RunId::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let origin = target.trim_end_matches("/mcp");
    let mut proxy = Command::new("node")
        .arg(servers().join("tls-proxy.mjs"))
        .args([dir.join("server.pem"), dir.join("server.key")])
        .arg(origin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let stderr = proxy.stderr.take().unwrap();
    let first = BufReader::new(stderr).lines().next().unwrap().unwrap();
    let port = first
        .strip_prefix("listening on port ")
        .unwrap_or_else(|| panic!("the TLS front did not start: {first}"));
    let url = format!("https://127.0.0.1:{port}/mcp");
    TlsFront { dir, proxy, url }
}

/// What a child (this binary again, with `SSL_CERT_FILE` set to `roots` or unset) answers for
/// `url`: `ok: TEXT` from the echo tool, or `error: WHY`.
fn in_child(url: &str, roots: Option<&Path>) -> String {
    answer_in_child("mcp_https::child_process", (CHILD_URL, url), roots)
}

/// What the child test `test` (this binary again, with `variable` set and `SSL_CERT_FILE` set
/// to `roots` or unset, so it reads its own trust at its first TLS client) printed between
/// [`BEGIN`] and [`END`].
pub(crate) fn answer_in_child(
    test: &str,
    (variable, value): (&str, &str),
    roots: Option<&Path>,
) -> String {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(variable, value)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    if let Some(roots) = roots {
        child.env("SSL_CERT_FILE", roots);
    }
    let output = child.output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "child failed: {stdout}");
    let start = stdout.find(BEGIN).expect("the child answers") + BEGIN.len() + 1;
    let end = stdout.find(END).expect("the child ends its answer");
    stdout[start..end].trim().to_owned()
}

/// Not a test of its own: the body of the child [`in_child`] starts. Without [`CHILD_URL`] (a
/// normal run) it has nothing to do.
#[test]
fn child_process() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answer = runtime.block_on(async {
        let spec = McpServerSpec::parse(&format!("web={url}")).unwrap();
        let tools = McpTools::start(&[spec]).await;
        let echo = tools
            .tool("mcp_web_echo")
            .expect("a name of the web server's");
        let ctx = crate::support::context("alice");
        // A start that failed for another reason than the certificate (the front answering
        // 502 while its upstream was not ready yet, seen once in CI) is tried again by the
        // server within about a second: the call is too, for up to 10 s.
        let mut tries = 0;
        loop {
            let error = match echo.call(&ctx, json!({"message": "over https"})).await {
                Ok(value) => break format!("ok: {}", value["text"]),
                Err(error) => format!("error: {error}"),
            };
            tries += 1;
            if error.contains("certificate") || tries == 10 {
                break error;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
    println!("{BEGIN}\n{answer}\n{END}");
}

#[test]
fn an_mcp_server_over_https_is_trusted_through_its_ca_and_refused_without_it() {
    let everything = http_everything();
    let front = tls_front(&everything.url);

    let trusted = in_child(&front.url, Some(&front.dir.join("ca.pem")));
    assert!(
        trusted.starts_with("ok: ") && trusted.contains("over https"),
        "{trusted}"
    );

    let refused = in_child(&front.url, None);
    assert!(
        refused.starts_with("error: the MCP server web has not started")
            && refused.contains("certificate"),
        "{refused}"
    );
    // The front served nothing to the refused client: the echo never ran for it.
    assert!(!refused.contains("over https"), "{refused}");
}
