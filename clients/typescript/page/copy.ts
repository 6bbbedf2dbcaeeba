// Copy buttons: on a finished answer (its markdown as the agent wrote it) and on each code
// block in an answer (the code). A plain module of app.ts, bundled into app.js.

/** The last text a copy button handed to the clipboard, and how (for the browser tests). */
export const copies: { text: string | null; how: string | null } = { text: null, how: null };

/** Puts `text` on the clipboard: the Clipboard API, or else the older copy command. */
export async function copyText(text: string): Promise<boolean> {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      Object.assign(copies, { text, how: "clipboard" });
      return true;
    } catch {
      // Refused (no permission, the page not focused): the older way may still work.
    }
  }
  const focused = document.activeElement as HTMLElement | null;
  const area = document.createElement("textarea");
  area.value = text;
  area.readOnly = true;
  area.className = "copy-buffer";
  area.setAttribute("aria-hidden", "true");
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  focused?.focus();
  if (ok) Object.assign(copies, { text, how: "execCommand" });
  return ok;
}

/** A "Copy" button for `what` ("the answer", "the code"): it copies what `text` gives, and
 * says "Copied" (or that it could not) for a moment. */
export function copyButton(what: string, text: () => string): HTMLButtonElement {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "secondary copy";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const say = (shown: string, label: string) => {
    b.textContent = shown;
    b.setAttribute("aria-label", label);
  };
  say("Copy", `Copy ${what}`);
  b.addEventListener("click", async () => {
    const ok = await copyText(text());
    if (ok) say("Copied", `Copied ${what}`);
    else say("Not copied", `Not copied: the browser refused to copy ${what}`);
    b.dataset.copied = String(ok);
    clearTimeout(timer);
    timer = setTimeout(() => {
      say("Copy", `Copy ${what}`);
      delete b.dataset.copied;
    }, 2000);
  });
  return b;
}

/** Gives each code block in `root`'s answers a bar with its language and a Copy button; the
 * block can take the focus, to scroll it sideways by keyboard. */
export function copyCodeButtons(root: HTMLElement): void {
  for (const pre of root.querySelectorAll<HTMLElement>(".answer pre")) {
    if (pre.parentElement?.classList.contains("code-block")) continue;
    const box = document.createElement("div");
    box.className = "code-block";
    const bar = document.createElement("div");
    bar.className = "code-bar";
    const language = /language-([\w+#.-]+)/.exec(pre.querySelector("code")?.className ?? "")?.[1];
    const label = document.createElement("span");
    label.textContent = language ?? "code";
    bar.append(label, copyButton("the code", () => pre.textContent ?? ""));
    pre.tabIndex = 0;
    pre.setAttribute("role", "group");
    pre.setAttribute("aria-label", language ? `Code (${language})` : "Code");
    pre.replaceWith(box);
    box.append(bar, pre);
  }
}
