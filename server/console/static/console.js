// Tollbooth console: the only script. Suggests the browser's time zone, and asks before a delete.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const tz = document.getElementById("tz");
  if (tz && !new URLSearchParams(location.search).has("tz")) {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && zone !== tz.value) tz.placeholder = zone;
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
