// pneumo admin panel: users (add: the key is shown once; disable) and the audit trail. Shown only to admins
// (GET /v1/me); the server enforces the role on every call. Uses window.pneumoApp from app.js.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const app = window.pneumoApp;
  if (!app) return;

  async function refresh() {
    let me = null;
    try {
      me = await (await app.api("/v1/me")).json();
    } catch (_) { /* not signed in */ }
    // the first user was just added, so this page's (anonymous) access ended: keep their key on screen
    if (!me && !$("new-key").hidden) return;
    $("admin").hidden = !me || me.role !== "admin";
    if ($("admin").hidden) return;
    await Promise.all([loadUsers(), loadAudit()]);
  }

  async function loadUsers() {
    try {
      const body = await (await app.api("/v1/users")).json();
      $("users").replaceChildren(...body.users.map((user) => {
        const li = document.createElement("li");
        li.dataset.name = user.name;
        li.dataset.disabled = String(user.disabled);
        const label = document.createElement("span");
        label.textContent = `${user.name} · ${user.role}${user.disabled ? " · disabled" : ""}`;
        li.append(label);
        if (!user.disabled) {
          const button = document.createElement("button");
          button.type = "button";
          button.textContent = "Disable";
          button.setAttribute("aria-label", `Disable ${user.name}`);
          button.addEventListener("click", () => disable(user.name));
          li.append(button);
        }
        return li;
      }));
    } catch (error) {
      app.setStatus(`Could not list users: ${error.message}`, true);
    }
  }

  async function loadAudit() {
    try {
      const body = await (await app.api("/v1/audit?limit=25")).json();
      $("audit").replaceChildren(...body.events.map((event) => {
        const li = document.createElement("li");
        li.dataset.action = event.action;
        const what = event.result_id ? ` ${event.result_id.slice(0, 8)}` : (event.detail && event.detail.user ? ` ${event.detail.user}` : "");
        li.textContent = `${new Date(event.at).toLocaleTimeString()} ${event.actor}: ${event.action}${what}`;
        return li;
      }));
    } catch (error) {
      app.setStatus(`Could not read the audit trail: ${error.message}`, true);
    }
  }

  async function addUser(event) {
    event.preventDefault();
    const name = $("user-name").value.trim();
    try {
      const response = await app.api("/v1/users", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name, role: $("user-role").value }),
      });
      const user = await response.json();
      const shown = $("new-key");
      shown.hidden = false;
      shown.textContent = `API key for ${user.name} (shown only now; copy it): `;
      const code = document.createElement("code");
      code.id = "new-key-value";
      code.textContent = user.api_key;
      shown.append(code);
      $("user-name").value = "";
      await refresh();
    } catch (error) {
      app.setStatus(`Could not add ${name}: ${error.message}`, true);
    }
  }

  async function disable(name) {
    try {
      await app.api(`/v1/users/${encodeURIComponent(name)}/disable`, { method: "POST" });
      await refresh();
    } catch (error) {
      app.setStatus(`Could not disable ${name}: ${error.message}`, true);
    }
  }

  $("user-form").addEventListener("submit", addUser);
  $("audit-refresh").addEventListener("click", loadAudit);
  $("api-key").addEventListener("change", () => { $("new-key").hidden = true; refresh(); });
  refresh();
})();
