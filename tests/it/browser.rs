//! The chat page in a real browser: Debian's headless Chromium driven through ChromeDriver
//! (WebDriver, via `fantoccini`). `.ci/run` installs both; without them these tests fail and
//! say what to install.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::server_support::start_server;
use agent_server::server::RunningServer;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One browser (its own profile, so its own cookies and storage) and its driver.
pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the WebDriver session makes chromedriver quit Chromium; killing only the
        // driver would leave Chromium's processes behind after every test. The tests run on
        // the multi-thread runtime, where blocking here for the session's end is allowed.
        let client = self.client.clone();
        let _ = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            })
        });
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub(crate) async fn browser() -> Browser {
    assert!(
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
        "the browser tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver (.ci/run does)"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"binary": CHROMIUM, "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--disable-quic", "--window-size=1100,1000"]}),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut last_error = String::new();
    for _ in 0..100 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return Browser { client, driver },
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot start a browser session: {last_error}");
}

pub(crate) async fn js(client: &Client, script: &str) -> Value {
    client
        .execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Polls `script` until it returns `true`, for up to 15 s.
pub(crate) async fn wait_js(client: &Client, what: &str, script: &str) {
    for _ in 0..300 {
        if js(client, script).await == json!(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The page's counters, and how many live events wait parked behind a history load
    // (`null`: none is loading), so that a timeout says where the events stopped.
    let stats = js(
        client,
        "return window.chat && { ...window.chat.stats, parked: window.chat.state.parked && window.chat.state.parked.length }",
    )
    .await;
    let notices = js(
        client,
        "return document.getElementById('notices').innerText",
    )
    .await;
    panic!("timed out waiting until {what}; stats {stats}; notices {notices}");
}

/// Polls `script` until it returns `want`, for up to 15 s; panics with what it last returned.
pub(crate) async fn wait_value(client: &Client, what: &str, script: &str, want: Value) {
    let mut last = Value::Null;
    for _ in 0..300 {
        last = js(client, script).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}: want {want}, last {last}");
}

/// How far the page scrolls sideways (0: it fits its width).
pub(crate) const NO_SIDEWAYS_SCROLL: &str =
    "return document.documentElement.scrollWidth - document.documentElement.clientWidth";

/// Opens the page and signs in as `user` (the page fetches a dev token) with the keyboard.
pub(crate) async fn sign_in(client: &Client, addr: SocketAddr, user: &str) {
    sign_in_as(client, addr, "user", user).await;
}

/// Opens the page, types `value` into the sign-in field `field_id`, presses Enter, and waits
/// until the page is connected, with the sign-in form hidden and the composer shown.
pub(crate) async fn sign_in_as(client: &Client, addr: SocketAddr, field_id: &str, value: &str) {
    client.goto(&format!("http://{addr}/")).await.unwrap();
    let field = client
        .wait()
        .for_element(Locator::Id(field_id))
        .await
        .unwrap();
    let visible = js(
        client,
        "return document.getElementById('composer').offsetParent !== null",
    )
    .await;
    assert_eq!(visible, false, "the composer shows before sign-in");
    field.send_keys(value).await.unwrap();
    field.send_keys("\u{E007}").await.unwrap(); // Enter submits the form.
    wait_js(
        client,
        "the page is connected",
        "return document.getElementById('status').dataset.state === 'connected'",
    )
    .await;
    let visible = js(client, "return [document.getElementById('signin'), document.getElementById('composer')].map(f => f.offsetParent !== null)").await;
    assert_eq!(
        visible,
        json!([false, true]),
        "after sign-in the sign-in form hides and the composer shows"
    );
    assert_eq!(
        js(client, "return window.chat.stats.cspViolations").await,
        json!(0),
        "the page's Content Security Policy blocked something (the browser's console says what)"
    );
}

/// Starts `agent` with `message` (and options) from the page's form.
pub(crate) async fn start(client: &Client, agent: &str, message: &str, input: Option<&str>) {
    client
        .find(Locator::Id("agent"))
        .await
        .unwrap()
        .select_by_value(agent)
        .await
        .unwrap();
    if let Some(input) = input {
        js(
            client,
            "document.getElementById('advanced').open = true; return true",
        )
        .await;
        let field = client.find(Locator::Id("input")).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(input).await.unwrap();
    }
    // How many runs show before this one, so that waiting for "the newest run" waits for
    // this run's view rather than taking the previous run for it.
    js(
        client,
        "window.runsBefore = document.querySelectorAll('#conversation > .run').length; return true",
    )
    .await;
    let message_field = client.find(Locator::Id("message")).await.unwrap();
    message_field.send_keys(message).await.unwrap();
    message_field.send_keys("\u{E007}").await.unwrap(); // Enter sends.
}

/// Waits until the newest top-level run on the page (the last of the conversation) is in
/// `run_state` (`completed`, `cancelled`, `error`); after [`start`], the run it started (the
/// page shows more runs than before it).
pub(crate) async fn wait_newest_run(client: &Client, run_state: &str) {
    let script = format!(
        "const all = [...document.querySelectorAll('#conversation > .run')]; const r = all[all.length - 1]; return all.length > (window.runsBefore || 0) && !!r && r.dataset.state === '{run_state}'"
    );
    wait_js(client, &format!("the newest run is {run_state}"), &script).await;
}

/// Restarts `server` on its address with the history `store`, and waits until the page has
/// reconnected (its resume failed: a new stream) and shows the stored conversation (one run).
pub(crate) async fn restart_keeping_history(
    server: RunningServer,
    store: String,
    client: &Client,
) -> RunningServer {
    let addr = server.addr();
    server.shutdown().await;
    let again = start_server(move |c| {
        c.addr = addr;
        c.store = Some(store);
    })
    .await;
    wait_js(
        client,
        "the page shows the stored conversation",
        "return window.chat.stats.failedResumes === 1 && window.chat.stats.stored === 1 \
         && document.getElementById('status').dataset.state === 'connected'",
    )
    .await;
    again
}

pub(crate) async fn artifact(client: &Client, name: &str) -> std::path::PathBuf {
    let png = client.screenshot().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_shows_its_whole_timeline_live() {
    let server = start_server(|c| c.jwt_secret = None).await;
    let b = browser().await;
    sign_in(&b.client, server.addr(), "alice").await;
    let agents = js(
        &b.client,
        "return [...document.querySelectorAll('#agent option')].map(o => o.value)",
    )
    .await;
    assert_eq!(agents, json!(["assistant", "synthetic", "triage"]));
    start(
        &b.client,
        "triage",
        "What is 12*7? And the time in Tokyo?",
        None,
    )
    .await;
    wait_newest_run(&b.client, "completed").await;
    let kinds = js(&b.client, "return [...document.querySelectorAll('#conversation > .run .steps > .timeline .kind')].map(k => k.textContent)").await;
    assert_eq!(
        kinds,
        json!(["thinking", "thinking"]),
        "the parent's own steps"
    );
    let sub_kinds = js(&b.client, "return [...document.querySelectorAll('.run.sub')].map(s => [...s.querySelectorAll('.kind')].map(k => k.textContent))").await;
    assert_eq!(sub_kinds.as_array().unwrap().len(), 2, "{sub_kinds}");
    for sub in sub_kinds.as_array().unwrap() {
        let sub: Vec<&str> = sub
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(sub, ["thinking", "thinking", "tool", "result"]);
    }
    let answer = js(
        &b.client,
        "return document.querySelector('#conversation > .run > .reply > .answer').textContent",
    )
    .await;
    let answer = answer.as_str().unwrap();
    assert!(
        answer.contains("12*7 = 84") && answer.contains("Asia/Tokyo"),
        "{answer}"
    );
    let status = js(
        &b.client,
        "return document.querySelector('#conversation > .run .run-state').textContent",
    )
    .await;
    assert!(
        status.as_str().unwrap().starts_with("answered in"),
        "{status}"
    );
    let stats = js(&b.client, "return window.chat.stats").await;
    assert_eq!(
        (stats["duplicates"].as_u64(), stats["gaps"].as_u64()),
        (Some(0), Some(0)),
        "{stats}"
    );
    let path = artifact(&b.client, "chat-page-finished-run.png").await;
    eprintln!("screenshot of a finished run: {}", path.display());
    // Readable on a narrow screen: nothing wider than the viewport.
    b.client.set_window_size(420, 900).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let overflow = js(
        &b.client,
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
    )
    .await;
    assert_eq!(overflow, 0, "the page scrolls sideways on a narrow screen");
    artifact(&b.client, "chat-page-narrow.png").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_button_cancels_the_run() {
    let server = start_server(|c| c.jwt_secret = None).await;
    let b = browser().await;
    sign_in(&b.client, server.addr(), "alice").await;
    start(
        &b.client,
        "synthetic",
        "wait forever",
        Some(r#"{"thinking":1,"tools":0,"chunks":0,"hang":true}"#),
    )
    .await;
    wait_js(
        &b.client,
        "the run is running",
        "return !!document.querySelector('#conversation > .run .timeline .row')",
    )
    .await;
    // While the run is live its steps are open, and it has a typing indicator.
    let live = js(&b.client, "const r = document.querySelector('#conversation > .run'); return [r.querySelector('.steps').open, r.querySelector('.typing').offsetParent !== null]").await;
    assert_eq!(
        live,
        json!([true, true]),
        "steps open and typing while live"
    );
    b.client
        .find(Locator::Css("#conversation > .run .stop"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_newest_run(&b.client, "cancelled").await;
    let last = js(&b.client, "const k = [...document.querySelectorAll('#conversation > .run .kind')]; return k[k.length - 1].textContent").await;
    assert_eq!(last, "stopped");
    let after = js(&b.client, "const r = document.querySelector('#conversation > .run'); return [!!r.querySelector('.stop'), r.querySelector('.typing').offsetParent !== null, r.querySelector('.run-state').textContent]").await;
    assert_eq!(
        after,
        json!([false, false, "stopped"]),
        "no Stop button and no typing indicator once stopped"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_is_resumed_and_every_event_shows_exactly_once() {
    let server = start_server(|c| c.jwt_secret = None).await;
    let b = browser().await;
    sign_in(&b.client, server.addr(), "alice").await;
    // 1 + 4 + 2 * 4 + 12 + 1 = 26 events over about 1.5 s.
    start(
        &b.client,
        "synthetic",
        "slow run",
        Some(r#"{"thinking":4,"tools":4,"chunks":12,"sleep_ms":60}"#),
    )
    .await;
    wait_js(
        &b.client,
        "a few events arrived",
        "return window.chat.stats.events >= 4",
    )
    .await;
    js(&b.client, "window.chat.dropConnection(); return true").await;
    wait_js(
        &b.client,
        "the page reconnected",
        "return window.chat.stats.connects >= 2",
    )
    .await;
    wait_js(
        &b.client,
        "more events arrived",
        "return window.chat.stats.events >= 14",
    )
    .await;
    js(&b.client, "window.chat.dropConnection(); return true").await;
    wait_newest_run(&b.client, "completed").await;
    let stats = js(&b.client, "return window.chat.stats").await;
    assert_eq!(stats["events"], 26, "{stats}");
    assert_eq!(
        (stats["duplicates"].as_u64(), stats["gaps"].as_u64()),
        (Some(0), Some(0)),
        "{stats}"
    );
    assert!(stats["connects"].as_u64().unwrap() >= 3, "{stats}");
    let notices = js(
        &b.client,
        "return document.getElementById('notices').innerText",
    )
    .await;
    assert!(
        notices
            .as_str()
            .unwrap()
            .contains("Reconnected and resumed"),
        "{notices}"
    );
    let seqs = js(
        &b.client,
        "return [...document.querySelectorAll('#conversation .row')].map(r => Number(r.dataset.seq))",
    )
    .await;
    let seqs: Vec<u64> = seqs
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seqs.len(), "a row shown twice: {seqs:?}");
    let answer = js(
        &b.client,
        "return [[...window.chat.state.runs.values()][0].text, document.querySelector('#conversation > .run .answer').textContent.trim()]",
    )
    .await;
    let expected: String = (1..=12).map(|i| format!("chunk {i} ")).collect();
    assert_eq!(
        answer,
        json!([expected, expected.trim_end()]),
        "the streamed answer lost or repeated a chunk"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tabs_of_a_user_share_runs_and_other_users_see_none() {
    let server = start_server(|c| c.jwt_secret = None).await;
    let alice = browser().await;
    let bob = browser().await;
    sign_in(&alice.client, server.addr(), "alice").await;
    sign_in(&bob.client, server.addr(), "bob").await;
    start(&alice.client, "assistant", "What is 6*7?", None).await;
    wait_newest_run(&alice.client, "completed").await;

    // A second tab of alice's shows her earlier run, and then both tabs see a new one.
    let first_tab = alice.client.window().await.unwrap();
    let tab = alice.client.new_window(true).await.unwrap();
    alice.client.switch_to_window(tab.handle).await.unwrap();
    sign_in(&alice.client, server.addr(), "alice").await;
    wait_js(
        &alice.client,
        "the second tab shows the earlier run",
        "return document.querySelectorAll('#conversation > .run').length === 1",
    )
    .await;
    start(&alice.client, "assistant", "What is 2+2?", None).await;
    wait_js(&alice.client, "the second tab's run completed", "const r = [...document.querySelectorAll('#conversation > .run')].pop(); return !!r && r.dataset.state === 'completed' && document.querySelectorAll('#conversation > .run').length === 2").await;
    alice.client.switch_to_window(first_tab).await.unwrap();
    wait_js(
        &alice.client,
        "the first tab shows both runs",
        "return document.querySelectorAll('#conversation > .run').length === 2",
    )
    .await;
    let answers = js(
        &alice.client,
        "return [...document.querySelectorAll('#conversation > .run .answer')].map(a => a.textContent)",
    )
    .await;
    assert!(
        answers[0].as_str().unwrap().contains("6*7 = 42"),
        "oldest first: {answers}"
    );
    assert!(
        answers[1].as_str().unwrap().contains("2+2 = 4"),
        "{answers}"
    );

    // Bob saw none of it; his own run shows only to him.
    assert_eq!(
        js(
            &bob.client,
            "return document.querySelectorAll('#conversation .run').length"
        )
        .await,
        0
    );
    start(&bob.client, "assistant", "What is 1+1?", None).await;
    wait_newest_run(&bob.client, "completed").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        js(
            &alice.client,
            "return document.querySelectorAll('#conversation > .run').length"
        )
        .await,
        2
    );
    let text = js(
        &alice.client,
        "return document.getElementById('conversation').innerText",
    )
    .await;
    assert!(
        !text.as_str().unwrap().contains("1+1"),
        "bob's run reached alice: {text}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_the_page_says_the_resume_failed_and_reloads() {
    let server = start_server(|_| {}).await;
    let addr = server.addr();
    let b = browser().await;
    // A configured secret survives the restart, so the pasted token stays valid.
    sign_in_as(
        &b.client,
        addr,
        "token",
        &crate::server_support::token("alice"),
    )
    .await;
    start(&b.client, "assistant", "What is 3*3?", None).await;
    wait_newest_run(&b.client, "completed").await;

    server.shutdown().await;
    wait_js(
        &b.client,
        "the page noticed the restart",
        "return document.getElementById('status').dataset.state === 'reconnecting'",
    )
    .await;
    let again = start_server(|c| c.addr = addr).await;
    wait_js(&b.client, "the page reconnected", "return window.chat.stats.failedResumes === 1 && document.getElementById('status').dataset.state === 'connected'").await;
    let notices = js(
        &b.client,
        "return document.getElementById('notices').innerText",
    )
    .await;
    // One notice, in plain words: the restart's "connection lost" gave way to what it meant.
    assert_eq!(
        notices.as_str().unwrap(),
        "The server restarted while you were disconnected: what happened meanwhile cannot be shown."
    );
    assert_eq!(
        js(
            &b.client,
            "return [document.getElementById('notices').children.length, document.getElementById('composer-notice').hidden]"
        )
        .await,
        json!([1, true])
    );
    // The old view is gone (the new server has no history of it), and the page works on.
    assert_eq!(
        js(
            &b.client,
            "return document.querySelectorAll('#conversation .run').length"
        )
        .await,
        0
    );
    start(&b.client, "assistant", "What is 4*4?", None).await;
    wait_newest_run(&b.client, "completed").await;
    again.shutdown().await;
}
