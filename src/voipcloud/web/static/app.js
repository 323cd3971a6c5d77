// voipcloud web interface: small behaviours on top of htmx (no build step).
(function () {
  "use strict";
  const layer = () => document.getElementById("layer");

  // A page fragment loaded into the layer opens it as a modal dialog.
  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target && event.detail.target.id === "layer-body") {
      const dialog = layer();
      if (!dialog.open) dialog.showModal();
      focusInLayer(dialog);
    }
  });

  // Where the keyboard goes when the layer opens: never the × button (Enter would close the
  // dialog). An [autofocus] element, else the first field of its form, else the form's primary
  // (submit) button, else the layer's title -- Enter then does nothing, Escape still closes.
  function focusInLayer(dialog) {
    const shown = (el) => el && !el.disabled && el.getClientRects().length > 0;
    const pick = (selector) => [...dialog.querySelectorAll(selector)].find(shown);
    const target =
      pick("[autofocus]") ||
      // a form marked data-no-focus is a side control (Quick info's maintenance reason)
      pick("form:not([data-no-focus]) input:not([type=hidden]), form:not([data-no-focus]) select, form:not([data-no-focus]) textarea") ||
      pick("form button[type=submit].button-primary, form button[type=submit].button-danger") ||
      pick("form:not([data-no-focus]) button[type=submit]");
    if (target) {
      target.focus();
      return;
    }
    const title = dialog.querySelector("#layer-title");
    if (title) {
      title.setAttribute("tabindex", "-1");
      title.focus();
    }
  }

  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    if (target.closest("[data-close-layer]")) {
      layer().close();
      return;
    }
    const copy = target.closest("[data-copy]");
    if (copy) {
      const source = document.getElementById(copy.getAttribute("data-copy"));
      const text = source ? source.textContent.trim() : "";
      const done = () => { copy.textContent = "Copied"; setTimeout(() => { copy.textContent = "Copy"; }, 2000); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, () => selectText(source));
      } else {
        selectText(source);
      }
    }
  });

  // a form that asks first: <form data-confirm="Delete …?">
  document.addEventListener("submit", (event) => {
    const form = event.target instanceof HTMLFormElement ? event.target : null;
    const question = form ? form.getAttribute("data-confirm") : null;
    if (question && !window.confirm(question)) event.preventDefault();
  });

  function selectText(element) {
    if (!element) return;
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // A form sent back with server-side errors: put the cursor in the first field at fault.
  document.addEventListener("DOMContentLoaded", () => {
    const invalid = document.querySelector("main [aria-invalid='true']");
    if (invalid) invalid.focus();
  });

  // Live regions (elements with data-live poll the server): show a note while their polls
  // fail (a request of something inside one, such as a row's menu, is not a poll).
  const status = () => document.getElementById("live-status");
  document.addEventListener("htmx:sendError", (event) => {
    if (event.detail.elt.matches("[data-live]")) status().hidden = false;
  });
  document.addEventListener("htmx:responseError", (event) => {
    if (event.detail.elt.matches("[data-live]")) status().hidden = false;
  });
  document.addEventListener("htmx:afterRequest", (event) => {
    if (event.detail.successful && event.detail.elt.matches("[data-live]")) status().hidden = true;
  });

  // Bulk selection (the Node Listing): the row checkboxes and "select all N matching" belong to
  // #bulk-form; the listing's live updates replace them, so the ticks are kept here by id and
  // put back after each swap. The bar says what the action will apply to.
  const ticked = new Set();
  const bulkBoxes = () => [...document.querySelectorAll("input[type=checkbox][form=bulk-form]")];
  function showSelection() {
    const said = document.getElementById("bulk-selected");
    if (!said) return;
    const all = document.getElementById("select-all-matching");
    const rows = bulkBoxes().filter((b) => b.name === "node_ids" && b.checked).length;
    if (all && all.checked) {
      said.textContent = `All ${all.dataset.total} matching nodes selected`;
    } else {
      said.textContent = rows ? `${rows} node${rows === 1 ? "" : "s"} selected` : "No node selected";
    }
    const page = document.getElementById("select-page");
    if (page) {
      const boxes = bulkBoxes().filter((b) => b.name === "node_ids");
      page.checked = boxes.length > 0 && boxes.every((b) => b.checked);
    }
  }
  document.addEventListener("change", (event) => {
    const box = event.target;
    if (!(box instanceof HTMLInputElement) || box.type !== "checkbox") return;
    if (box.id === "select-page") {
      for (const row of bulkBoxes().filter((b) => b.name === "node_ids")) {
        row.checked = box.checked;
        if (box.checked) ticked.add(row.id); else ticked.delete(row.id);
      }
    } else if (box.form && box.form.id === "bulk-form" && box.id) {
      if (box.checked) ticked.add(box.id); else ticked.delete(box.id);
    } else {
      return;
    }
    showSelection();
  });
  document.addEventListener("htmx:afterSettle", () => {
    for (const box of bulkBoxes()) box.checked = ticked.has(box.id);
    showSelection();
  });

  // The Node Listing's row menus: a row's actions are decided and loaded when its Actions
  // button opens the menu (GET /nodes/{id}/actions), not for every row of every poll. The
  // button closes it again, and so does Escape inside it. A live update of the listing keeps
  // an open menu open (its last content at once, then loaded again: the node may have changed)
  // and the keyboard focus where it was.
  const menuOf = (toggle) => document.getElementById(toggle.getAttribute("aria-controls"));
  const toggleOf = (menu) => document.querySelector(`[aria-controls="${menu.id}"]`);
  function closeMenu(toggle, focus) {
    const menu = menuOf(toggle);
    if (menu) { menu.hidden = true; menu.replaceChildren(); }
    toggle.setAttribute("aria-expanded", "false");
    if (focus) toggle.focus();
  }
  document.addEventListener("htmx:beforeRequest", (event) => {
    const toggle = event.detail.elt;
    if (!(toggle instanceof Element) || !toggle.classList.contains("row-menu-toggle")) return;
    const menu = menuOf(toggle);
    if (toggle.getAttribute("aria-expanded") === "true") {
      event.preventDefault();  // the open menu's button closes it: nothing to load
      closeMenu(toggle, false);
    } else if (menu) {
      menu.dataset.opening = "yes";  // a live update meanwhile opens it again (below)
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || !(event.target instanceof Element)) return;
    const menu = event.target.closest(".row-menu");
    const toggle = menu && toggleOf(menu);
    if (toggle) { event.preventDefault(); closeMenu(toggle, true); }
  });
  document.addEventListener("htmx:afterRequest", (event) => {
    // a row menu's opening that failed is not pending any more (its menu stays closed)
    const toggle = event.detail.elt;
    if (!event.detail.successful && toggle.isConnected && toggle.classList.contains("row-menu-toggle")) {
      const menu = menuOf(toggle);
      if (menu) delete menu.dataset.opening;
    }
  });
  let openMenus = null;  // the listing's open menus while a live update replaces them
  document.addEventListener("htmx:beforeSwap", (event) => {
    const target = event.detail.target;
    if (!event.detail.shouldSwap || !target) return;
    if (target.classList && target.classList.contains("row-menu")) {
      // a reload of a menu that was closed while it ran: it stays closed
      const asked = event.detail.requestConfig && event.detail.requestConfig.elt;
      if (target.hidden && !(asked && asked.classList.contains("row-menu-toggle"))) {
        event.detail.shouldSwap = false;
      }
      return;
    }
    if (target.id !== "listing") return;
    const active = document.activeElement;
    openMenus = {
      menus: [...document.querySelectorAll("#listing .row-menu:not([hidden])")].map((m) => [m.id, m.innerHTML]),
      // asked to open, not loaded yet: the answer would go to the row being replaced
      opening: [...document.querySelectorAll("#listing .row-menu[hidden][data-opening]")].map((m) => m.id),
      focus: active && active.closest(".row-menu") ? active.id : "",
    };
  });
  document.addEventListener("htmx:afterSwap", (event) => {
    const target = event.detail.target;
    if (target && target.classList && target.classList.contains("row-menu")) {
      const toggle = toggleOf(target);
      target.hidden = false;
      target.removeAttribute("aria-busy");
      delete target.dataset.opening;
      if (toggle) toggle.setAttribute("aria-expanded", "true");
      const asked = event.detail.requestConfig && event.detail.requestConfig.elt;
      if (toggle && asked === toggle) {  // opened by its button: the keyboard goes in
        const first = target.querySelector("a, button, [tabindex]");
        if (first) first.focus();
      }
      return;
    }
    if (!openMenus || !document.getElementById("listing")) return;
    const { menus, opening, focus } = openMenus;
    openMenus = null;
    for (const [id, html] of menus) {
      const menu = document.getElementById(id);
      const toggle = menu && toggleOf(menu);
      if (!toggle) continue;  // the row left the page
      menu.innerHTML = html;
      menu.hidden = false;
      toggle.setAttribute("aria-expanded", "true");
      menu.setAttribute("aria-busy", "true");  // until its actions are loaded again
      htmx.process(menu);
      // its own source: requests from one source queue, and a queue keeps only its last
      htmx.ajax("GET", toggle.getAttribute("hx-get"), { source: menu, target: menu, swap: "innerHTML" });
    }
    for (const id of opening) {  // asked by its button: opened as if asked again
      const menu = document.getElementById(id);
      const toggle = menu && toggleOf(menu);
      if (toggle) {
        htmx.ajax("GET", toggle.getAttribute("hx-get"), { source: toggle, target: menu, swap: "innerHTML" });
      }
    }
    const focused = focus && document.getElementById(focus);
    if (focused) focused.focus({ preventScroll: true });
  });

  // Filter a long table as the user types: <input data-filter-table="table-id">.
  document.addEventListener("input", (event) => {
    const input = event.target;
    if (!(input instanceof HTMLInputElement) || !input.dataset.filterTable) return;
    const table = document.getElementById(input.dataset.filterTable);
    if (!table) return;
    const needle = input.value.trim().toLowerCase();
    for (const row of table.tBodies[0].rows) {
      row.hidden = needle !== "" && !row.textContent.toLowerCase().includes(needle);
    }
  });
})();
