// Live parts of the console: every element with data-refresh="<fragment url>" is fetched again
// every data-every ms and its content replaced with the server-rendered (escaped) fragment.
// Paused while the tab is hidden; a failed fetch keeps the last content and marks it stale.
(function () {
  "use strict";
  function refresh(element) {
    if (document.hidden) return;
    fetch(element.dataset.refresh, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.redirected || !response.ok) throw new Error(String(response.status));
        return response.text();
      })
      .then(function (html) {
        element.innerHTML = html;
        element.classList.remove("stale");
        element.dataset.refreshed = String(Date.now());
      })
      .catch(function () { element.classList.add("stale"); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(function (element) {
      var every = parseInt(element.dataset.every || "2000", 10);
      setInterval(function () { refresh(element); }, Math.max(every, 500));
    });
  });
})();
