// A small actions menu behind one "⋯" button (the WAI-ARIA menu button pattern), for the rows
// of the list of conversations: a plain module of app.ts, bundled into app.js.
//
// Enter, Space or a click on the button opens the menu with the focus on its first item
// (ArrowDown: the first, ArrowUp: the last); in the menu the arrows, Home and End move, Enter
// or Space picks, Escape closes it and gives the focus back to the button, Tab closes it and
// moves on, and a click outside closes it. One menu is open at a time.

/** One item of a menu: `act` runs on a pick; the menu closes first unless `keepOpen`. */
export type MenuItem = {
  label: string;
  cls: string;
  title?: string;
  keepOpen?: boolean;
  act: (item: HTMLButtonElement) => void;
};

type Open = { button: HTMLButtonElement; menu: HTMLElement; onClose?: () => void };
let open: Open | null = null;
let ids = 0;

/** Whether a menu is open now. */
export const menuIsOpen = (): boolean => open !== null;

/** Closes the open menu, if any; `refocus`: the focus goes back to its button. */
export function closeMenu(refocus: boolean): void {
  const was = open;
  if (!was) return;
  open = null;
  was.menu.remove();
  was.button.setAttribute("aria-expanded", "false");
  if (refocus && was.button.isConnected) was.button.focus();
  was.onClose?.();
}

/**
 * A "⋯" button named `Actions for ${name}` whose menu holds what `items` gives when it
 * opens; the menu goes into the button's parent, after the button. `onClose` runs each time
 * the menu closes.
 */
export function menuButton(name: string, items: () => MenuItem[], onClose?: () => void): HTMLButtonElement {
  const button = document.createElement("button");
  button.type = "button";
  // The "⋯" is drawn by the style sheet (app.css): the button's name is its label, and it
  // has no text a checker would have to judge by eye.
  button.className = "actions";
  button.setAttribute("aria-label", `Actions for ${name}`);
  button.setAttribute("aria-haspopup", "menu");
  button.setAttribute("aria-expanded", "false");
  button.title = "Rename or delete";
  const show = (focus: "first" | "last") => {
    closeMenu(false);
    const menu = document.createElement("div");
    menu.className = "row-menu";
    menu.id = `row-menu-${++ids}`;
    menu.setAttribute("role", "menu");
    menu.setAttribute("aria-label", `Actions for ${name}`);
    for (const it of items()) {
      const item = document.createElement("button");
      item.type = "button";
      item.className = it.cls;
      item.textContent = it.label;
      item.tabIndex = -1;
      item.setAttribute("role", "menuitem");
      if (it.title) item.title = it.title;
      item.addEventListener("click", () => {
        if (!it.keepOpen) closeMenu(false);
        it.act(item);
      });
      menu.append(item);
    }
    menu.addEventListener("keydown", (e) => onMenuKey(e, menu));
    menu.addEventListener("focusout", (e) => {
      const to = e.relatedTarget as Node | null;
      if (to && !menu.contains(to) && to !== button) closeMenu(false);
    });
    button.after(menu);
    button.setAttribute("aria-controls", menu.id);
    button.setAttribute("aria-expanded", "true");
    open = onClose ? { button, menu, onClose } : { button, menu };
    const all = itemsOf(menu);
    all[focus === "first" ? 0 : all.length - 1]?.focus();
    menu.scrollIntoView({ block: "nearest" });
  };
  button.addEventListener("click", () => {
    if (open?.button === button) closeMenu(true);
    else show("first");
  });
  button.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      show(e.key === "ArrowDown" ? "first" : "last");
    }
  });
  return button;
}

const itemsOf = (menu: HTMLElement) => [...menu.querySelectorAll<HTMLButtonElement>('[role="menuitem"]')];

function onMenuKey(e: KeyboardEvent, menu: HTMLElement): void {
  const all = itemsOf(menu);
  const at = all.indexOf(document.activeElement as HTMLButtonElement);
  let next: number | null = null;
  switch (e.key) {
    case "ArrowDown":
      next = (at + 1) % all.length;
      break;
    case "ArrowUp":
      next = (at - 1 + all.length) % all.length;
      break;
    case "Home":
      next = 0;
      break;
    case "End":
      next = all.length - 1;
      break;
    case "Escape":
      // Only the menu closes (not the drawer it is in).
      e.preventDefault();
      e.stopPropagation();
      closeMenu(true);
      return;
    case "Tab":
      // From the button, the browser moves the focus on as from the row.
      closeMenu(true);
      return;
    default:
      return;
  }
  e.preventDefault();
  all[next]?.focus();
}

// A press outside the open menu and its button closes it.
document.addEventListener(
  "pointerdown",
  (e) => {
    const target = e.target as Node | null;
    if (open && target && !open.menu.contains(target) && !open.button.contains(target)) closeMenu(false);
  },
  true,
);
