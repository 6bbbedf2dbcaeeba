//! The chat page's comforts, in a real browser (see `browser.rs` for the driver): a row of
//! the list of conversations keeps Rename and Delete in a menu, by keyboard and by mouse, so
//! its title has the row's width; a finished answer and each of its code blocks have a Copy
//! button; an empty conversation offers the agent's example prompts, one press sending one.

use fantoccini::error::{CmdError, ErrorStatus, WebDriver};
use fantoccini::{Client, Locator};
use llm_agent::LlmConfig;
use serde_json::{Value, json};

use crate::browser::{artifact, browser, js, sign_in, sign_in_as, start, wait_js, wait_newest_run};
use crate::browser_a11y::{cdp, set_width};
use crate::llm::{DONE, Model, Reply, content};
use crate::server_support::{start_server, token};

const ENTER: &str = "\u{E007}";
const ESCAPE: &str = "\u{E00C}";
const ARROW_UP: &str = "\u{E013}";
const ARROW_DOWN: &str = "\u{E015}";

/// Presses `keys` on the element that has the focus. The page may render the focused
/// element anew between finding it and pressing (WebDriver's "stale element reference",
/// seen once in CI); the keys did not reach it then, so it presses on the new one.
async fn press(client: &Client, keys: &str) {
    for _ in 0..5 {
        match client.active_element().await.unwrap().send_keys(keys).await {
            Err(CmdError::Standard(WebDriver {
                error: ErrorStatus::StaleElementReference,
                ..
            })) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            answer => return answer.unwrap(),
        }
    }
    panic!("the focused element kept being rendered anew; {keys:?} never reached it");
}

/// Where the focus is: the focused element's role (or tag), class and text, and the menu's
/// state (whether a menu shows, and the aria-expanded of the focused row's "⋯" button).
async fn focus(client: &Client) -> Value {
    js(
        client,
        "const a = document.activeElement; const li = a.closest('#threads li'); \
         return [a.getAttribute('role') || a.tagName.toLowerCase(), a.className, a.textContent, \
           !!document.querySelector('#threads [role=menu]'), \
           li && li.querySelector('.actions').getAttribute('aria-expanded')]",
    )
    .await
}

/// The sidebar's first row: its title's width, the row's width, and whether its date fits
/// one line.
const FIRST_ROW: &str = "const li = document.querySelector('#threads li'); \
    const t = li.querySelector('time'); \
    return [li.querySelector('.title').getBoundingClientRect().width, li.getBoundingClientRect().width, \
      t.getBoundingClientRect().height <= parseFloat(getComputedStyle(t).lineHeight) * 1.2]";

const LONG: &str = "What is 12*7, and what is the time in Tokyo right now, and in New York?";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rows_actions_are_a_menu_by_keyboard_and_mouse_and_its_title_has_the_rows_width() {
    let dir = crate::approvals::store_dir();
    let store = crate::approvals::sqlite(&dir);
    let server = start_server(move |c| c.store = Some(store)).await;
    let addr = server.addr();
    let mut alice = crate::server_support::Client::user(addr, "alice").await;
    for message in ["What is 2+2?", LONG] {
        alice.start_in_thread("assistant", message, &mut None).await;
        alice.events_until_terminals(1).await;
    }
    let b = browser().await;
    set_width(&b.client, 420).await;
    sign_in_as(&b.client, addr, "token", &token("alice")).await;
    js(
        &b.client,
        "document.getElementById('sidebar-toggle').click(); return true",
    )
    .await;
    wait_js(
        &b.client,
        "the drawer lists both conversations",
        "return document.querySelectorAll('#threads li').length === 2 \
         && getComputedStyle(document.getElementById('sidebar')).display !== 'none'",
    )
    .await;
    // The long title has the row's width but its "⋯" button: 215 of 261 px (before, next to
    // Rename and Delete: 128), and the date one line (before: two).
    let row = js(&b.client, FIRST_ROW).await;
    let (title, width) = (row[0].as_f64().unwrap(), row[1].as_f64().unwrap());
    assert!(title >= 0.7 * width && title > 180.0, "{row}");
    assert_eq!(row[2], true, "the date wraps: {row}");
    let names = js(
        &b.client,
        "return [...document.querySelectorAll('#threads .actions')].map(b => \
           [b.getAttribute('aria-label'), b.getAttribute('aria-haspopup'), b.getAttribute('aria-expanded')])",
    )
    .await;
    assert_eq!(
        names,
        json!([
            [format!("Actions for {LONG}"), "menu", "false"],
            ["Actions for What is 2+2?", "menu", "false"]
        ])
    );
    artifact(&b.client, "comfort-rows-narrow.png").await;

    // By keyboard: Enter opens the menu at its first item, the arrows move round it, Escape
    // closes it (not the drawer) with the focus back on its button.
    js(
        &b.client,
        "document.querySelector('#threads li .actions').focus(); return true",
    )
    .await;
    press(&b.client, ENTER).await;
    assert_eq!(
        focus(&b.client).await,
        json!(["menuitem", "rename", "Rename", true, "true"])
    );
    artifact(&b.client, "comfort-row-menu-narrow.png").await;
    press(&b.client, ARROW_DOWN).await;
    assert_eq!(
        focus(&b.client).await,
        json!(["menuitem", "delete", "Delete", true, "true"])
    );
    press(&b.client, ARROW_DOWN).await;
    assert_eq!(focus(&b.client).await[2], "Rename", "ArrowDown wraps round");
    press(&b.client, ARROW_UP).await;
    assert_eq!(focus(&b.client).await[2], "Delete", "ArrowUp wraps round");
    press(&b.client, ESCAPE).await;
    assert_eq!(
        focus(&b.client).await,
        json!(["button", "actions", "", false, "false"])
    );
    let drawer = "return getComputedStyle(document.getElementById('sidebar')).display !== 'none'";
    assert_eq!(
        js(&b.client, drawer).await,
        true,
        "Escape closed the drawer"
    );
    // Space opens it too; Rename, by keyboard, and the focus comes back to the row.
    press(&b.client, " ").await;
    assert_eq!(focus(&b.client).await[2], "Rename");
    press(&b.client, ENTER).await;
    wait_js(
        &b.client,
        "the title is a field with the focus",
        "return document.activeElement.classList.contains('rename-input')",
    )
    .await;
    js(
        &b.client,
        "document.activeElement.value = 'Sums and clocks'; return true",
    )
    .await;
    press(&b.client, ENTER).await;
    wait_js(
        &b.client,
        "the new title shows, the focus on its row's menu button",
        "const li = document.activeElement.closest('#threads li'); \
         return !!li && li.querySelector('.title')?.textContent === 'Sums and clocks' \
           && document.activeElement === li.querySelector('.actions')",
    )
    .await;
    // Delete, by keyboard: ArrowUp opens at the last item; the first Enter asks, the second
    // deletes.
    press(&b.client, ARROW_UP).await;
    assert_eq!(focus(&b.client).await[2], "Delete");
    press(&b.client, ENTER).await;
    assert_eq!(
        focus(&b.client).await,
        json!(["menuitem", "delete", "Delete?", true, "true"]),
        "the first Enter asks again"
    );
    press(&b.client, ENTER).await;
    wait_js(
        &b.client,
        "one conversation is left",
        "return document.querySelectorAll('#threads li').length === 1 \
         && document.querySelector('#threads .title').textContent === 'What is 2+2?'",
    )
    .await;
    // It was the open conversation: a new one takes its place, the drawer closes, the focus
    // goes to the composer.
    assert_eq!(
        js(
            &b.client,
            "return [window.chat.state.thread, document.activeElement.id, \
               getComputedStyle(document.getElementById('sidebar')).display]"
        )
        .await,
        json!([null, "message", "none"])
    );

    // By mouse: a click opens it, a click outside closes it; a click on Rename renames.
    js(
        &b.client,
        "document.getElementById('sidebar-toggle').click(); return true",
    )
    .await;
    wait_js(&b.client, "the drawer opens again", drawer).await;
    let actions = || async {
        b.client
            .find(Locator::Css("#threads li .actions"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    };
    actions().await;
    assert_eq!(focus(&b.client).await[3], true, "a click opens the menu");
    // The drawer's middle: below its rows.
    b.client
        .find(Locator::Id("sidebar"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        js(
            &b.client,
            "return [!!document.querySelector('#threads [role=menu]'), \
               document.querySelector('#threads li .actions').getAttribute('aria-expanded')]"
        )
        .await,
        json!([false, "false"]),
        "a click outside closes the menu"
    );
    assert_eq!(js(&b.client, drawer).await, true);
    actions().await;
    b.client
        .find(Locator::Css("#threads [role=menu] .rename"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &b.client,
        "a click on Rename makes the title a field",
        "return document.activeElement.classList.contains('rename-input')",
    )
    .await;
    press(&b.client, ESCAPE).await;
    wait_js(
        &b.client,
        "Escape keeps the title",
        "return document.querySelector('#threads .title')?.textContent === 'What is 2+2?'",
    )
    .await;
    // On a wide screen the list sits beside the conversation: the title has the row too.
    set_width(&b.client, 1280).await;
    let row = js(&b.client, FIRST_ROW).await;
    // 183 of 229 px (before: 96).
    assert!(
        row[0].as_f64().unwrap() >= 0.7 * row[1].as_f64().unwrap(),
        "{row}"
    );
    assert_eq!(row[2], true, "the date wraps: {row}");
    artifact(&b.client, "comfort-rows-wide.png").await;
    server.shutdown().await;
}

/// A model's answer with a code block.
const ANSWER: &str =
    "Resume with the last `seq` you saw:\n\n```js\nclient.resume({ epoch, seq });\n```\n";

/// What the clipboard holds (the page reads it: the test granted the permission).
async fn clipboard(client: &Client) -> Value {
    client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             navigator.clipboard.readText().then(done, e => done('cannot read: ' + e))",
            vec![],
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_buttons_put_an_answer_and_its_code_on_the_clipboard() {
    let model = Model::start(vec![Reply::Stream(vec![content(ANSWER), DONE])]).await;
    let base = format!("http://{}/v1", model.addr);
    let server = start_server(move |c| {
        c.jwt_secret = None;
        c.llm = Some(LlmConfig::new(base, "test-model"));
    })
    .await;
    let addr = server.addr();
    let b = browser().await;
    set_width(&b.client, 1280).await;
    sign_in(&b.client, addr, "alice").await;
    cdp(
        &b.client,
        "Browser.grantPermissions",
        json!({"origin": format!("http://{addr}"),
            "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}),
    )
    .await;
    start(&b.client, "llm", "How do I resume?", None).await;
    // A running answer has no Copy button yet.
    wait_newest_run(&b.client, "completed").await;
    let buttons = js(
        &b.client,
        "return [...document.querySelectorAll('#conversation button.copy')].map(b => \
           [b.closest('.code-block') ? 'code' : 'answer', b.textContent, b.getAttribute('aria-label')])",
    )
    .await;
    assert_eq!(
        buttons,
        json!([
            ["code", "Copy", "Copy the code"],
            ["answer", "Copy", "Copy the answer"]
        ])
    );
    artifact(&b.client, "comfort-copy.png").await;

    let click = |css: &'static str| {
        let client = b.client.clone();
        async move {
            client
                .find(Locator::Css(css))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
    };
    click(".reply-actions button.copy").await;
    wait_js(
        &b.client,
        "the answer's button says it copied",
        "const b = document.querySelector('.reply-actions button.copy'); \
         return b.textContent === 'Copied' && b.getAttribute('aria-label') === 'Copied the answer'",
    )
    .await;
    assert_eq!(clipboard(&b.client).await, ANSWER);
    assert_eq!(
        js(&b.client, "return window.chat.copies").await,
        json!({"text": ANSWER, "how": "clipboard"})
    );
    artifact(&b.client, "comfort-copied.png").await;
    click(".code-block button.copy").await;
    wait_js(
        &b.client,
        "the code's button says it copied",
        "return document.querySelector('.code-block button.copy').textContent === 'Copied'",
    )
    .await;
    assert_eq!(
        clipboard(&b.client).await,
        "client.resume({ epoch, seq });\n"
    );
    // A moment later the buttons say Copy again.
    wait_js(
        &b.client,
        "the buttons say Copy again",
        "return [...document.querySelectorAll('button.copy')].every(b => b.textContent === 'Copy')",
    )
    .await;
    server.shutdown().await;
}

/// The example prompts the page shows, and the heading above them (None: hidden).
async fn examples_shown(client: &Client) -> Value {
    js(
        client,
        "const s = document.getElementById('examples'); \
         return s.offsetParent === null ? null : [s.querySelector('h2').textContent, \
           [...s.querySelectorAll('button')].map(b => b.textContent)]",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_conversation_offers_the_agents_examples_and_one_press_sends_one() {
    let dir = crate::approvals::store_dir();
    let store = crate::approvals::sqlite(&dir);
    let server = start_server(move |c| {
        c.jwt_secret = None;
        c.store = Some(store);
    })
    .await;
    let addr = server.addr();
    let agents: Value = reqwest::get(format!("http://{addr}/agents"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let examples_of = |name: &str| -> Vec<String> {
        agents
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .and_then(|a| a["examples"].as_array())
            .map(|e| e.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let assistant = examples_of("assistant");
    assert!(
        !assistant.is_empty(),
        "the assistant offers no examples: {agents}"
    );
    let b = browser().await;
    set_width(&b.client, 420).await;
    sign_in(&b.client, addr, "alice").await;
    wait_js(
        &b.client,
        "the examples show",
        "return document.getElementById('examples').offsetParent !== null",
    )
    .await;
    assert_eq!(
        examples_shown(&b.client).await,
        json!(["Try asking assistant", assistant])
    );
    artifact(&b.client, "comfort-examples-narrow.png").await;
    // Another agent: its own examples (or none, and the list hides).
    b.client
        .find(Locator::Id("agent"))
        .await
        .unwrap()
        .select_by_value("triage")
        .await
        .unwrap();
    let triage = examples_of("triage");
    let want = if triage.is_empty() {
        Value::Null
    } else {
        json!(["Try asking triage", triage])
    };
    assert_eq!(examples_shown(&b.client).await, want);
    b.client
        .find(Locator::Id("agent"))
        .await
        .unwrap()
        .select_by_value("assistant")
        .await
        .unwrap();
    set_width(&b.client, 1280).await;
    artifact(&b.client, "comfort-examples-wide.png").await;

    // One press sends the first example: it is the conversation's message, answered, and
    // the examples are gone.
    js(&b.client, "window.runsBefore = 0; return true").await;
    b.client
        .find(Locator::Css("#examples-list button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_newest_run(&b.client, "completed").await;
    let run = js(
        &b.client,
        "const r = document.querySelector('#conversation > .run'); \
         return [r.querySelector('.bubble .text').textContent, r.querySelector('.answer').textContent.length > 0, \
           document.activeElement.id, document.getElementById('message').value]",
    )
    .await;
    assert_eq!(run, json!([assistant[0], true, "message", ""]));
    assert_eq!(examples_shown(&b.client).await, Value::Null);
    // Another message, and still none; a new conversation brings them back.
    start(&b.client, "assistant", "What is 2+2?", None).await;
    wait_newest_run(&b.client, "completed").await;
    assert_eq!(examples_shown(&b.client).await, Value::Null);
    b.client
        .find(Locator::Id("new-thread"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        examples_shown(&b.client).await,
        json!(["Try asking assistant", assistant])
    );
    // Opening the old conversation hides them again.
    js(
        &b.client,
        "document.querySelector('#threads li .open').click(); return true",
    )
    .await;
    wait_js(
        &b.client,
        "the old conversation shows, without the examples",
        "return document.querySelectorAll('#conversation > .run').length === 2 \
         && document.getElementById('examples').offsetParent === null",
    )
    .await;
    server.shutdown().await;
}
