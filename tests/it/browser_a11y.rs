//! The chat page's accessibility, in a real browser (see `browser.rs` for the driver): axe-core
//! (the npm package, pinned in clients/typescript's lock file) checks the sign-in view, the
//! first screen (its example prompts), a conversation with finished answers (one with a code
//! block) and the list of conversations with a row's menu open (beside the conversation at
//! 1280 px, the drawer at 420 px), and the page of a document an answer links to
//! (`/docs/protocol.md#resume`), each at both widths and in both
//! themes (the system's light and dark, emulated through the DevTools protocol). No violation
//! may be serious or critical; every violation found is printed, and each view is saved as a
//! screenshot under the target directory's `browser-artifacts`.

use fantoccini::Client;
use fantoccini::wd::WebDriverCompatibleCommand;
use llm_agent::LlmConfig;
use reqwest::{Method, Url};
use serde_json::{Value, json};

use crate::browser::{artifact, browser, js, sign_in, start, wait_js, wait_newest_run, wait_value};
use crate::llm::{DONE, Model, Reply, content};
use crate::server_support::start_server;

/// axe-core's browser build, installed by `npm ci` in clients/typescript.
const AXE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../clients/typescript/node_modules/axe-core/axe.min.js"
);

/// A Chrome DevTools Protocol command, through ChromeDriver's passthrough
/// (`POST /session/{id}/goog/cdp/execute`).
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &Url,
        session: Option<&str>,
    ) -> Result<Url, <Url as std::str::FromStr>::Err> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &Url) -> (Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params});
        (Method::POST, Some(body.to_string()))
    }
}

/// Runs a DevTools command in the browser's current tab.
pub(crate) async fn cdp(client: &Client, cmd: &'static str, params: Value) -> Value {
    client
        .issue_cmd(Cdp { cmd, params })
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// Makes the page see the system's `theme` ("light" or "dark"), and checks that it does.
pub(crate) async fn set_theme(client: &Client, theme: &str) {
    let features = json!([{"name": "prefers-color-scheme", "value": theme}]);
    cdp(
        client,
        "Emulation.setEmulatedMedia",
        json!({"media": "", "features": features}),
    )
    .await;
    assert_eq!(
        js(
            client,
            "return matchMedia('(prefers-color-scheme: dark)').matches"
        )
        .await,
        json!(theme == "dark"),
        "the emulated theme is not what the page sees"
    );
}

/// Sets the browser's window to `width` px (900 high), and waits for the page to see it.
pub(crate) async fn set_width(client: &Client, width: u32) {
    client.set_window_size(width, 900).await.unwrap();
    wait_js(
        client,
        &format!("the page is {width} px wide"),
        &format!("return Math.abs(window.innerWidth - {width}) < 40"),
    )
    .await;
}

/// A rule axe-core found broken on a view.
struct Violation {
    view: String,
    id: String,
    impact: String,
    /// The elements that break it (CSS selectors).
    nodes: Vec<String>,
    help: String,
}

/// What axe-core finds on the page as it is now (`view` names it): every violation, each
/// printed with its elements, and the rules that pass.
async fn axe(client: &Client, view: &str) -> Vec<Violation> {
    if js(client, "return typeof window.axe").await != json!("object") {
        let source = std::fs::read_to_string(AXE).unwrap_or_else(|e| {
            panic!("cannot read axe-core at {AXE} ({e}): run `npm ci` in clients/typescript (.ci/run does)")
        });
        client
            .execute(&format!("{source}\n;return true"), vec![])
            .await
            .expect("axe-core loads into the page");
    }
    let script = "const done = arguments[arguments.length - 1]; \
        axe.run(document) \
          .then(r => done({passes: r.passes.map(p => p.id), \
            incomplete: r.incomplete.map(v => `${v.id} (${v.impact}) x${v.nodes.length}: ${v.nodes.map(n => n.target.join(' ') + ' ' + ((n.any[0] || {}).message || '')).join('; ')}`), \
            violations: r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, \
              nodes: v.nodes.map(n => n.target.join(' '))}))})) \
          .catch(e => done({error: String(e)}))";
    let result = client.execute_async(script, vec![]).await.unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("axe failed on {view}: {result}"))
            .iter()
            .map(|s| s.as_str().unwrap_or("?").to_owned())
            .collect()
    };
    let passes = strings(&result["passes"]);
    let found: Vec<Violation> = result["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| Violation {
            view: view.to_owned(),
            id: v["id"].as_str().unwrap_or("?").to_owned(),
            impact: v["impact"].as_str().unwrap_or("none").to_owned(),
            nodes: strings(&v["nodes"]),
            help: v["help"].as_str().unwrap_or("").to_owned(),
        })
        .collect();
    // A checker that checked nothing would find nothing.
    assert!(
        passes.len() + found.len() >= 20,
        "axe ran only {} rules on {view}",
        passes.len() + found.len()
    );
    eprintln!(
        "axe {view}: {} rules pass ({}); to review by hand: {}",
        passes.len(),
        passes.join(" "),
        result["incomplete"]
    );
    for v in &found {
        eprintln!(
            "axe {view}: {} ({}) x{}: {} [{}]",
            v.id,
            v.impact,
            v.nodes.len(),
            v.help,
            v.nodes.join(", ")
        );
    }
    if found.is_empty() {
        eprintln!("axe {view}: no violation");
    }
    found
}

/// Checks the page as it is now in both themes: axe's findings (added to `all`) and a
/// screenshot of each.
async fn check(client: &Client, view: &str, width: u32, all: &mut Vec<Violation>) {
    for theme in ["light", "dark"] {
        set_theme(client, theme).await;
        let name = format!("{view}-{width}-{theme}");
        all.extend(axe(client, &name).await);
        let path = artifact(client, &format!("a11y-{name}.png")).await;
        eprintln!("screenshot of {name}: {}", path.display());
    }
}

/// The widths of the sidebar's first title and of its row, and the height of its date.
const ROW_SIZES: &str = "const li = document.querySelector('#threads li'); \
    return [li.querySelector('.title').getBoundingClientRect().width, li.getBoundingClientRect().width, \
      li.querySelector('time').getBoundingClientRect().height]";

/// Opens (or closes) the first row's menu of actions.
async fn toggle_menu(client: &Client, open: bool) {
    js(
        client,
        "document.querySelector('#threads li .actions').click(); return true",
    )
    .await;
    wait_js(
        client,
        "the row's menu opens or closes",
        &format!("return !!document.querySelector('#threads li [role=menu]') === {open}"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axe_finds_no_serious_violation_in_any_view_width_or_theme() {
    let model = Model::start(vec![Reply::Stream(vec![
        content(
            "Resuming takes two steps:\n\n1. reconnect\n2. send `resume` with the last seq\n\n\
             ```js\nclient.resume({ epoch, seq });\n```\n",
        ),
        DONE,
    ])])
    .await;
    let base = format!("http://{}/v1", model.addr);
    let dir = crate::approvals::store_dir();
    let store = crate::approvals::sqlite(&dir);
    let server = start_server(move |c| {
        c.jwt_secret = None;
        c.store = Some(store);
        c.llm = Some(LlmConfig::new(base, "test-model"));
    })
    .await;
    let addr = server.addr();
    let b = browser().await;
    let mut all = Vec::new();
    for width in [1280, 420] {
        set_width(&b.client, width).await;
        b.client.goto(&format!("http://{addr}/")).await.unwrap();
        wait_js(
            &b.client,
            "the sign-in form shows",
            "return document.getElementById('signin').offsetParent !== null",
        )
        .await;
        check(&b.client, "signin", width, &mut all).await;
    }

    // The first screen: an empty conversation, with the agent's example prompts.
    set_width(&b.client, 1280).await;
    sign_in(&b.client, addr, "alice").await;
    for width in [1280, 420] {
        set_width(&b.client, width).await;
        check(&b.client, "first-screen", width, &mut all).await;
    }

    // A conversation with a long title in the list, and the one shown: a tool's answer with
    // its steps, and a model's answer with a list and a code block.
    set_width(&b.client, 1280).await;
    start(
        &b.client,
        "assistant",
        "What is 12*7? Please also tell me how you worked it out, step by step",
        None,
    )
    .await;
    wait_newest_run(&b.client, "completed").await;
    js(
        &b.client,
        "document.getElementById('new-thread').click(); return true",
    )
    .await;
    start(&b.client, "assistant", "What is 12*7?", None).await;
    wait_newest_run(&b.client, "completed").await;
    start(&b.client, "llm", "How does resume work?", None).await;
    wait_newest_run(&b.client, "completed").await;
    wait_js(
        &b.client,
        "the list shows both conversations",
        "return document.querySelectorAll('#threads li').length === 2 \
         && !!document.querySelector('#conversation .answer pre code')",
    )
    .await;
    for width in [1280, 420] {
        set_width(&b.client, width).await;
        check(&b.client, "conversation", width, &mut all).await;
    }

    // The list of conversations, with a row's menu open: beside the conversation on a wide
    // screen, a drawer on a narrow one.
    set_width(&b.client, 1280).await;
    eprintln!(
        "row sizes at 1280 px (title, row, date height): {}",
        js(&b.client, ROW_SIZES).await
    );
    toggle_menu(&b.client, true).await;
    check(&b.client, "sidebar", 1280, &mut all).await;
    toggle_menu(&b.client, false).await;
    set_width(&b.client, 420).await;
    js(
        &b.client,
        "document.getElementById('sidebar-toggle').click(); return true",
    )
    .await;
    wait_js(
        &b.client,
        "the drawer opens",
        "return getComputedStyle(document.getElementById('sidebar')).display !== 'none'",
    )
    .await;
    eprintln!(
        "row sizes at 420 px (title, row, date height): {}",
        js(&b.client, ROW_SIZES).await
    );
    toggle_menu(&b.client, true).await;
    check(&b.client, "sidebar", 420, &mut all).await;

    // The document an answer links to, opened at the section it names.
    for width in [1280, 420] {
        set_width(&b.client, width).await;
        let page = format!("http://{}/docs/protocol.md#resume", server.addr());
        b.client.goto(&page).await.unwrap();
        wait_js(
            &b.client,
            "the document's page",
            "return !!document.getElementById('resume')",
        )
        .await;
        check(&b.client, "docs", width, &mut all).await;
    }

    for v in &all {
        eprintln!(
            "axe summary {}: {} {} {}",
            v.view,
            v.id,
            v.impact,
            v.nodes.len()
        );
    }
    let serious: Vec<String> = all
        .iter()
        .filter(|v| v.impact == "serious" || v.impact == "critical")
        .map(|v| {
            format!(
                "{}: {} ({}, {} element(s))",
                v.view,
                v.id,
                v.impact,
                v.nodes.len()
            )
        })
        .collect();
    assert!(
        serious.is_empty(),
        "axe found serious or critical violations (the test's output lists them all):\n{}",
        serious.join("\n")
    );
    server.shutdown().await;
}

/// A name for a control that outlives a redraw of its part of the page: its id, or its
/// thread's or run's id with its class and text.
const KEY: &str = "const key = e => e.id || [e.closest('[data-thread-id]')?.dataset.threadId, \
    e.closest('[data-run-id]')?.dataset.runId, e.tagName, e.className, e.textContent.slice(0, 40)].join('|');";

/// Every control a person can use on the page now (shown, enabled), by its [`KEY`].
fn controls_script() -> String {
    format!(
        "{KEY} return [...document.querySelectorAll(\
           'button, input, select, textarea, summary, a[href], [tabindex=\"0\"]')] \
           .filter(e => e.getClientRects().length > 0 && !e.disabled && !e.closest('[hidden]')).map(key)"
    )
}

/// The control that has the focus (its [`KEY`]), and whether its focus outline shows.
fn focused_script() -> String {
    format!(
        "{KEY} const a = document.activeElement; const s = getComputedStyle(a); \
         return [key(a), s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2]"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyboard_reaches_every_control_and_the_conversation_is_a_polite_log() {
    let dir = crate::approvals::store_dir();
    let store = crate::approvals::sqlite(&dir);
    let server = start_server(move |c| {
        c.jwt_secret = None;
        c.store = Some(store);
    })
    .await;
    let b = browser().await;
    set_width(&b.client, 1280).await;
    sign_in(&b.client, server.addr(), "alice").await;
    // Once the opened conversation is shown (quietly), the conversation is a polite log.
    wait_value(
        &b.client,
        "the conversation is a polite log",
        "const c = document.getElementById('conversation'); \
         return [c.getAttribute('role'), c.getAttribute('aria-live'), c.getAttribute('aria-relevant')]",
        json!(["log", "polite", "additions"]),
    )
    .await;
    // A running answer is busy (read out once, when it is whole), its steps never.
    start(
        &b.client,
        "synthetic",
        "wait",
        Some(r#"{"thinking":1,"tools":0,"chunks":2,"hang":true}"#),
    )
    .await;
    let answer = "const r = document.querySelector('#conversation > .run'); \
        return [r.dataset.state, r.querySelector('.answer').getAttribute('aria-busy'), \
          r.querySelector('.steps').getAttribute('aria-live')]";
    wait_js(
        &b.client,
        "the run is running",
        "return !!document.querySelector('#conversation > .run .timeline .row')",
    )
    .await;
    assert_eq!(
        js(&b.client, answer).await,
        json!(["running", "true", "off"])
    );
    js(
        &b.client,
        "document.querySelector('#conversation > .run .stop').click(); return true",
    )
    .await;
    wait_newest_run(&b.client, "cancelled").await;
    assert_eq!(
        js(&b.client, answer).await,
        json!(["cancelled", null, "off"])
    );
    start(&b.client, "assistant", "What is 12*7?", None).await;
    wait_newest_run(&b.client, "completed").await;
    js(
        &b.client,
        "document.getElementById('advanced').open = true; return true",
    )
    .await;

    // Tab from the first control goes through every one, each with its focus outline.
    let strings = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let controls = strings(js(&b.client, &controls_script()).await);
    assert!(controls.len() >= 10, "{controls:?}");
    js(
        &b.client,
        "document.getElementById('signout').focus(); return true",
    )
    .await;
    let mut reached = std::collections::BTreeSet::new();
    let mut unseen_outline = Vec::new();
    for _ in 0..controls.len() + 3 {
        let focused = js(&b.client, &focused_script()).await;
        let key = focused[0].as_str().unwrap().to_owned();
        // (After the last control the focus leaves the page.)
        if focused[1] != true && controls.contains(&key) {
            unseen_outline.push(key.clone());
        }
        reached.insert(key);
        press_tab(&b.client).await;
    }
    // (A control may have been drawn again meanwhile: the page's controls are those of now.)
    let controls = strings(js(&b.client, &controls_script()).await);
    eprintln!(
        "Tab reached {} of the page's {} controls",
        controls.iter().filter(|c| reached.contains(*c)).count(),
        controls.len()
    );
    let missed: Vec<&String> = controls.iter().filter(|c| !reached.contains(*c)).collect();
    assert!(missed.is_empty(), "Tab never reached {missed:?}");
    assert!(
        unseen_outline.is_empty(),
        "no visible focus outline on {unseen_outline:?}"
    );
    server.shutdown().await;
}

/// Presses Tab on the element that has the focus.
async fn press_tab(client: &Client) {
    client
        .active_element()
        .await
        .unwrap()
        .send_keys("\u{E004}")
        .await
        .unwrap();
}
