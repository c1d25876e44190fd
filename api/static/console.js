// Bida console: small enhancements over server-rendered pages. Every page
// works without this script; with it, times show in the browser's own time
// zone, figures marked data-live refresh in place, the language switch
// works, and forms marked data-confirm ask first.
"use strict";

function localTimes(root) {
  const lang = document.documentElement.lang || undefined;
  for (const el of root.querySelectorAll("time[datetime]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (!isNaN(at)) {
      el.textContent = at.toLocaleString(lang);
      el.title = el.getAttribute("datetime");
    }
  }
}

function refreshLive(el) {
  const every = Math.max(2, Number(el.dataset.every || 5)) * 1000;
  const tick = async () => {
    if (!document.hidden) {
      try {
        const response = await fetch(el.dataset.live, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (response.redirected || response.url.includes("/login")) {
          window.location.reload();
          return;
        }
        if (response.ok) {
          el.innerHTML = await response.text();
          localTimes(el);
          el.dataset.refreshed = String(Date.now());
        }
      } catch (e) {
        // The next tick tries again (a node restarting, say).
      }
    }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  for (const el of document.querySelectorAll("[data-live]")) refreshLive(el);
  for (const button of document.querySelectorAll("[data-lang]")) {
    button.addEventListener("click", () => {
      document.cookie = "bida_lang=" + button.dataset.lang + "; path=/; max-age=31536000; SameSite=Strict";
      window.location.reload();
    });
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
